"""``vilau-rt batch`` and the Ray Data callables, on a local 2-CPU Ray with the tiny random model.

One Ray for the module (starting it takes seconds); each batch run starts its own actors, each
loading the Pipeline once. Random weights: the captions are noise, but they must be the noise a
single-process ``Pipeline.caption`` gives for the same image.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="Ray Data is the [ray] extra: pip install 'vilau-rt[ray]'")
pq = pytest.importorskip("pyarrow.parquet")

from vilau_rt.cli import main
from vilau_rt.integrations.batch_cli import run_batch
from vilau_rt.integrations.ray import Captioner, Encoder
from vilau_rt.pipeline import Pipeline

MAX_NEW_TOKENS = 8  # tiny-256's context is 256 tokens; short captions keep the run quick
GOOD = ["a.png", "b.jpg", "sub/c.png", "d.png", "e.PNG"]
CORRUPT = "broken.png"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch
    from vilau_export.checkpoint_writer import write_checkpoint

    from vilau_rt.model.config import preset

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    return write_checkpoint(preset("tiny-256"), out, seed=0, dtype=torch.float32)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, name in enumerate(GOOD):
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (24 + 8 * i, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG" if name.endswith("jpg") else "PNG")
    (folder / CORRUPT).write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    (folder / "notes.txt").write_text("not an image: skipped by suffix")
    return folder


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return Pipeline.from_pretrained(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False)  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def _rows(path) -> dict:
    return {r["path"].rsplit("images", 1)[-1]: r for r in pq.read_table(path).to_pylist()}


def test_batch_caption_rows_equal_single_process_captions(local_ray, checkpoint, images, pipe,
                                                          tmp_path):  # fmt: skip
    out = tmp_path / "captions.parquet"
    summary = run_batch("caption", checkpoint, images, out, workers=2, batch_size=2,
                        max_new_tokens=MAX_NEW_TOKENS, device="cpu")  # fmt: skip
    rows = _rows(out)
    assert (summary["rows"], summary["errors"]) == (len(GOOD) + 1, 1)
    assert len(rows) == len(GOOD) + 1
    for name in GOOD:
        row = next(r for k, r in rows.items() if k.endswith(name))
        assert row["error"] is None
        assert row["caption"] == pipe.caption(row["path"], max_new_tokens=MAX_NEW_TOKENS)
    bad = next(r for k, r in rows.items() if k.endswith(CORRUPT))
    assert bad["caption"] is None and "cannot read" in bad["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.parquet"]  # no leftovers


def test_batch_encode_command_writes_codes_equal_encode_image(local_ray, checkpoint, images, pipe,
                                                              tmp_path, capsys):  # fmt: skip
    out = tmp_path / "codes.parquet"
    rc = main(["batch", "encode", str(checkpoint), str(images), str(out), "--workers", "2",
               "--batch-size", "3", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    assert capsys.readouterr().out.startswith(f"{len(GOOD) + 1} rows, 1 errors, ")
    rows = _rows(out)
    assert len(rows) == len(GOOD) + 1
    for row in rows.values():
        if row["path"].endswith(CORRUPT):
            assert row["codes"] is None and "cannot read" in row["error"]
            continue
        codes = np.reshape(row["codes"], row["shape"])
        np.testing.assert_array_equal(codes, pipe.encode_image(row["path"]))


def test_batch_reads_a_parquet_of_paths_and_image_bytes(local_ray, checkpoint, images, pipe,
                                                        tmp_path):  # fmt: skip
    import pyarrow as pa

    table = pa.table({
        "path": ["a.png", str(images / "b.jpg"), "junk.png"],
        "image": [(images / "a.png").read_bytes(), None, b"junk"],
        "label": ["x", "y", "z"],  # other columns are left out
    })  # fmt: skip
    pq.write_table(table, tmp_path / "in.parquet")
    out = tmp_path / "codes.parquet"
    summary = run_batch("encode", checkpoint, tmp_path / "in.parquet", out, workers=2,
                        device="cpu")  # fmt: skip
    assert (summary["rows"], summary["errors"]) == (3, 1)
    rows = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    assert set(rows) == set(table.column("path").to_pylist())
    for name, file in (("a.png", images / "a.png"), (str(images / "b.jpg"), images / "b.jpg")):
        codes = np.reshape(rows[name]["codes"], rows[name]["shape"])
        np.testing.assert_array_equal(codes, pipe.encode_image(file))
    assert "cannot read image junk.png" in rows["junk.png"]["error"]


def test_captioner_reads_parquet_style_columns_without_ray(checkpoint, images, pipe):
    """Bytes, Hugging Face {bytes, path} structs, numpy arrays and path-only rows in one batch;
    a corrupt row and a missing file get their error, the others their caption."""
    png = (images / "a.png").read_bytes()
    pixels = np.asarray(Image.open(images / "d.png"))
    values = np.empty(6, dtype=object)  # as Ray hands a column of mixed objects
    values[:] = [png, {"bytes": png, "path": "hf.png"}, pixels, None, None, b"garbage"]
    paths = np.array(["a.png", "hf.png", "d.png", str(images / "b.jpg"), "gone.png", "x"])
    batch = {"path": paths, "image": values}
    captioner = Captioner(str(checkpoint), max_new_tokens=MAX_NEW_TOKENS, device="cpu")
    out = captioner(batch).to_pylist()
    want_a = pipe.caption(images / "a.png", max_new_tokens=MAX_NEW_TOKENS)
    assert [r["caption"] for r in out[:2]] == [want_a, want_a]
    assert out[2]["caption"] == pipe.caption(pixels, max_new_tokens=MAX_NEW_TOKENS)
    assert out[3]["caption"] == pipe.caption(images / "b.jpg", max_new_tokens=MAX_NEW_TOKENS)
    assert "not found" in out[4]["error"] and "cannot read" in out[5]["error"]
    assert [r["error"] is None for r in out] == [True] * 4 + [False] * 2


def test_encoder_accepts_a_pandas_batch(checkpoint, images, pipe):
    import pandas as pd

    buf = io.BytesIO()
    Image.open(images / "a.png").save(buf, format="PNG")
    batch = pd.DataFrame({"bytes": [buf.getvalue()]})
    (row,) = Encoder(str(checkpoint), device="cpu")(batch).to_pylist()
    assert row["path"] is None and row["error"] is None
    np.testing.assert_array_equal(
        np.reshape(row["codes"], row["shape"]), pipe.encode_image(images / "a.png")
    )


def test_a_checkpoint_the_actors_cannot_load_fails_in_one_line_and_writes_nothing(
    local_ray, checkpoint, images, tmp_path, capsys
):
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (projector,) = (broken / "mm_projector").glob("*.safetensors")
    projector.write_bytes(projector.read_bytes()[:1000])  # truncated: the loader refuses it
    out = tmp_path / "out" / "codes.parquet"
    assert main(["batch", "encode", str(broken), str(images), str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Ray job failed" in err[0] and "truncated" in err[0]
    assert list(out.parent.iterdir()) == []


def test_batched_entry_points_equal_one_image_at_a_time(images, pipe):
    files = [images / name for name in GOOD]
    codes = pipe.encode_images(files)
    np.testing.assert_array_equal(codes, np.stack([pipe.encode_image(f) for f in files]))
    assert pipe.encode_images([]).shape == (0, *codes.shape[1:])
    captions = pipe.caption_batch(files, max_new_tokens=MAX_NEW_TOKENS)
    assert captions == [pipe.caption(f, max_new_tokens=MAX_NEW_TOKENS) for f in files]
    assert pipe.caption_batch([]) == []


def test_batch_command_errors_are_one_line(checkpoint, images, tmp_path, capsys):
    (tmp_path / "taken.parquet").write_bytes(b"")
    assert main(["batch", "caption", str(checkpoint), str(images),
                 str(tmp_path / "taken.parquet")]) == 2  # fmt: skip
    assert main(["batch", "caption", str(checkpoint), str(tmp_path / "nowhere"),
                 str(tmp_path / "o.parquet")]) == 2  # fmt: skip
    not_a_checkpoint = ["batch", "encode", str(images), str(images), str(tmp_path / "o.parquet")]
    assert main(not_a_checkpoint) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "exists" in err[0] and "not found" in err[1]
    assert "config.json" in err[2]
    assert not (tmp_path / "o.parquet").exists()
