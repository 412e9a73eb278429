"""Weights kept in the 16 bits the checkpoint stores them in: ``Linear16`` and ``Embedding16``.

Official VILA-U checkpoints store their weights in bfloat16 (AutoAWQ ones keep the lm_head and the
token embeddings in float16). On the CPU the model computes in float32, and loading converted
every weight to float32: twice the memory of the file (a 7B LLM: 27 GB instead of 13.5) and twice
the bytes each decode step reads. Every float16 and bfloat16 value is exact in float32, so a
float32 result needs no float32 copy of the weights: the native backend's GEMV and GEMM
(``ops.native.linear``) widen 16-bit weights in registers and return the bits they return on the
float32 upcast, and an embedding row widens exactly.

``load_vilau(..., keep_16bit=True)`` (what ``Pipeline.from_pretrained`` asks for with the native
backend on the CPU in float32) builds the linears of the LLM, the depth transformer, the vision
tower and the projector whose stored weight is float16 / bfloat16 as ``Linear16``, and the LLM's
token embeddings as ``Embedding16`` (unless the lm_head is tied to them); their weights are then
the file's own mapped bytes. The rest (norms, convolutions, the RVQ codebooks, the pixel decoder)
is float32 as before.

Who reads it:
| caller                     | computes                                                       |
|----------------------------|----------------------------------------------------------------|
| ``Linear16.forward``       | ``native.linear(x, W, b)``: on the CPU in float32 our GEMV /   |
| (vision tower, projector)  | GEMM on the 16-bit bytes, else ``F.linear`` on the upcast       |
| native backend, CPU        | ``native.linear`` / the decoder's 16-bit GEMV, the depth loop  |
|                            | (``native.depth_loop``): no upcast copy                        |
| ``Embedding16.forward``    | the rows, widened to float32 (exact)                           |
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDENED_DTYPES = (torch.float16, torch.bfloat16)


def _weight16(who: str, shape: tuple[int, int], dtype: torch.dtype, device) -> nn.Parameter:
    """An empty frozen weight of ``shape`` in 16-bit ``dtype`` (TypeError naming ``who`` else)."""
    if dtype not in WIDENED_DTYPES:
        raise TypeError(f"{who}: weight_dtype is {dtype}; expected float16 or bfloat16")
    return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


class Linear16(nn.Module):
    """y = x @ float(W)^T + b with W [out, in] kept float16 or bfloat16; bias float32 or None."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        weight_dtype: torch.dtype,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _weight16("Linear16", (out_features, in_features), weight_dtype, device)
        if bias:
            self.bias = nn.Parameter(
                torch.empty(out_features, dtype=torch.float32, device=device), requires_grad=False
            )
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..ops import native  # ops imports the model package: imported on first use

        if x.dtype != torch.float32:
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.linear(x, self.weight.to(x.dtype), bias)
        return native.linear(x, self.weight, self.bias)

    def widened(self) -> nn.Linear:
        """An ``nn.Linear`` holding the float32 upcast (a copy)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        lin.weight = nn.Parameter(self.weight.detach().float(), requires_grad=False)
        if self.bias is not None:
            lin.bias = nn.Parameter(self.bias.detach().clone(), requires_grad=False)
        return lin.to(self.weight.device)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, weight_dtype={self.weight.dtype}"
        )


class Embedding16(nn.Module):
    """Token embeddings [num, dim] kept float16 or bfloat16; ``forward`` returns float32 rows."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        weight_dtype: torch.dtype,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        shape = (num_embeddings, embedding_dim)
        self.weight = _weight16("Embedding16", shape, weight_dtype, device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight).float()

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, weight_dtype={self.weight.dtype}"


def loaded_dtype(like: torch.Tensor, dtype: torch.dtype) -> torch.dtype:
    """The dtype a checkpoint tensor is loaded in for the model tensor ``like`` (a meta tensor):
    a ``Linear16`` weight's own 16 bits (it stays as stored), else the load's ``dtype``."""
    return like.dtype if like.dtype in WIDENED_DTYPES else dtype


def keep_linears_16bit(llm: nn.Module, stored: dict[str, torch.dtype]) -> list[str]:
    """Swap each ``nn.Linear`` of ``llm`` whose weight ``stored`` (module-relative key ->
    dtype in the file) lists as float16 / bfloat16 for an empty ``Linear16`` of that dtype on
    the linear's device (``meta`` for a model a loader then fills). Returns the swapped names."""
    swapped = []
    for name, lin in list(llm.named_modules()):
        if type(lin) is not nn.Linear:
            continue
        dtype = stored.get(f"{name}.weight")
        if dtype not in WIDENED_DTYPES:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = llm.get_submodule(parent_name) if parent_name else llm
        setattr(
            parent,
            child,
            Linear16(lin.in_features, lin.out_features, lin.bias is not None, dtype,
                     device=lin.weight.device),
        )  # fmt: skip
        swapped.append(name)
    return swapped


def keep_embedding_16bit(parent: nn.Module, child: str, stored: torch.dtype | None) -> bool:
    """Swap the ``nn.Embedding`` ``parent.<child>`` for an empty ``Embedding16`` of dtype
    ``stored`` (what the file holds) when that is float16 / bfloat16; returns whether it did."""
    emb = getattr(parent, child)
    if type(emb) is not nn.Embedding or stored not in WIDENED_DTYPES:
        return False
    setattr(parent, child, Embedding16(emb.num_embeddings, emb.embedding_dim, stored,
                                       device=emb.weight.device))  # fmt: skip
    return True
