"""Memory-mapped, validated reading of safetensors files and sharded folders.

A tensor handed out here is a view of a private (copy-on-write) memory map of the file: nothing is
read until it is touched, and a tensor used as-is (same dtype, CPU) is never copied, so a loaded
model does not hold its weights twice. Every structural problem (bad header, a tensor that runs
past the end of a truncated file, a shard named by the index that is missing) raises a
CheckpointError or CheckpointNotFoundError naming the file and, where there is one, the key.
"""

from __future__ import annotations

import itertools
import json
import mmap
import struct
from pathlib import Path

import torch

from ..errors import CheckpointError, CheckpointNotFoundError

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsFile:
    """One ``.safetensors`` file: header parsed and checked up front, tensors mapped lazily."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointNotFoundError(f"{self.path} not found")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{self.path} is truncated: {size} bytes, no header")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(
                    f"{self.path} is truncated or not safetensors: header of {n} bytes "
                    f"announced, file has {size}"
                )
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{self.path} has a corrupt safetensors header ({e})") from e
        self.metadata = header.pop("__metadata__", None) or {}
        self.base = 8 + n
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for key, e in header.items():
            try:
                dtype = DTYPES[e["dtype"]]
                shape = tuple(int(s) for s in e["shape"])
                start, end = (int(o) for o in e["data_offsets"])
            except (KeyError, TypeError, ValueError) as err:
                raise CheckpointError(f"{self.path}: bad header entry for {key!r}: {e}") from err
            if start < 0 or end < start or any(s < 0 for s in shape):
                raise CheckpointError(
                    f"{self.path}: tensor {key!r} has data offsets {[start, end]} and shape "
                    f"{list(shape)}; offsets count from the end of the header and must be "
                    "0 <= start <= end (the file is corrupt or was not written as safetensors)"
                )
            numel = 1
            for s in shape:
                numel *= s
            if end - start != numel * dtype.itemsize:
                raise CheckpointError(
                    f"{self.path}: tensor {key!r} declares {end - start} bytes for shape "
                    f"{list(shape)} {e['dtype']}"
                )
            if self.base + end > size:
                raise CheckpointError(
                    f"{self.path} is truncated: tensor {key!r} ends at byte {self.base + end} "
                    f"but the file has {size} bytes; re-download or re-write it"
                )
            self.entries[key] = (dtype, shape, start, end)
        self._check_no_overlap()
        self._map = None

    def _check_no_overlap(self) -> None:
        spans = sorted((s, e, k) for k, (_, _, s, e) in self.entries.items() if e > s)
        for (s0, e0, k0), (s1, _, k1) in itertools.pairwise(spans):
            if s1 < e0:
                raise CheckpointError(
                    f"{self.path}: tensors {k0!r} (bytes {s0}..{e0}) and {k1!r} (from byte "
                    f"{s1}) overlap; the file is corrupt"
                )

    def names(self) -> list[str]:
        return list(self.entries)

    def meta(self, key: str) -> tuple[torch.dtype, tuple[int, ...]]:
        dtype, shape, _, _ = self.entries[key]
        return dtype, shape

    def get(self, key: str) -> torch.Tensor:
        """The tensor ``key`` as a view of the memory map (copy-on-write)."""
        if key not in self.entries:
            raise CheckpointError(f"{self.path} has no tensor {key!r}")
        dtype, shape, start, end = self.entries[key]
        if end == start:
            return torch.empty(shape, dtype=dtype)
        if self._map is None:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        offset = self.base + start
        if offset % dtype.itemsize == 0:
            t = torch.frombuffer(
                self._map, dtype=dtype, count=(end - start) // dtype.itemsize, offset=offset
            )
        else:  # unaligned data: the one case where a copy is unavoidable
            raw = torch.frombuffer(self._map, dtype=torch.uint8, count=end - start, offset=offset)
            t = raw.clone().view(dtype)
        return t.view(shape)


class TensorSource:
    """All tensors of a folder: one ``*.safetensors`` file, or shards listed by an index."""

    def __init__(self, folder: str | Path, stem: str = "model"):
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointNotFoundError(f"{folder} not found: the checkpoint lacks this folder")
        self.folder = folder
        index = folder / f"{stem}.safetensors.index.json"
        single = folder / f"{stem}.safetensors"
        self.files: dict[str, SafetensorsFile] = {}
        self.where: dict[str, str] = {}
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{index} is not a valid safetensors index ({e})") from e
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index}: weight_map must map tensor names to shard files")
            for shard in sorted(set(weight_map.values())):
                if (
                    not isinstance(shard, str)
                    or Path(shard).name != shard
                    or shard in ("", ".", "..")
                ):
                    raise CheckpointError(
                        f"{index} names shard {shard!r}: a shard must be a file name inside "
                        f"{folder}; paths to other folders are refused"
                    )
                if not (folder / shard).is_file():
                    raise CheckpointNotFoundError(
                        f"shard {folder / shard} named by {index} is missing; "
                        "copy every shard of the checkpoint"
                    )
                self.files[shard] = SafetensorsFile(folder / shard)
            for key, shard in weight_map.items():
                if key not in self.files[shard].entries:
                    raise CheckpointError(f"{index} maps {key!r} to {shard}, which lacks it")
                self.where[key] = shard
        elif single.is_file():
            self.files[single.name] = SafetensorsFile(single)
            self.where = {k: single.name for k in self.files[single.name].names()}
        else:
            others = sorted(p.name for p in folder.glob("*.bin")) + sorted(
                p.name for p in folder.glob("*.pt")
            )
            hint = f" (found {others}: only safetensors are loaded, convert them)" if others else ""
            raise CheckpointNotFoundError(f"{folder} holds no {single.name} or {index.name}{hint}")

    def names(self) -> list[str]:
        return list(self.where)

    def file_of(self, key: str) -> Path:
        return self.files[self.where[key]].path

    def meta(self, key: str):
        return self.files[self.where[key]].meta(key)

    def get(self, key: str) -> torch.Tensor:
        if key not in self.where:
            raise CheckpointError(f"{self.folder} has no tensor {key!r}")
        return self.files[self.where[key]].get(key)

    def get_float(
        self, key: str, like: torch.Tensor, dtype, device, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Float weight ``key``, checked against the shape of ``like``, in ``dtype`` on ``device``
        (a mapped view when nothing changes, else converted one tensor at a time); with ``out``
        (of that dtype, device and shape), converted into it and returned."""
        stored_dtype, shape = self.meta(key)
        if tuple(shape) != tuple(like.shape):
            raise CheckpointError(
                f"tensor {key!r} in {self.file_of(key)} has shape {list(shape)}, the config "
                f"implies {list(like.shape)}"
            )
        if not stored_dtype.is_floating_point:
            raise CheckpointError(
                f"tensor {key!r} in {self.file_of(key)} is {stored_dtype}; a float weight is "
                "expected"
            )
        if out is not None:
            return out.copy_(self.get(key))
        return self.get(key).to(device=device, dtype=dtype)
