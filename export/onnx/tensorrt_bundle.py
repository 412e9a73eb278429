"""The TensorRT part of a ``--target tensorrt`` bundle: shape profiles, plugins, build script.

``finish_tensorrt_bundle`` returns the manifest's ``tensorrt`` section and writes
``build_engines.sh``, one ``trtexec`` line per graph, which a Jetson user runs as is:

```
tensorrt:
  parser_opset   20 (TensorRT 10.3, JetPack 6)
  plugins        {library, version, namespace, creators: {name: fields}} of the creators used
  max_batch      the largest LLM batch the profiles admit (2 = one image with CFG)
  fp16           whether engines are built with --fp16 (precision fp16)
  profiles       {graph: {input: {min, opt, max}}}: one optimization profile per graph
  build_script   build_engines.sh
```
Profiles: the LLM batch spans 1 (understanding) to ``max_batch`` with 2 (the CFG pair of one
image, what image generation runs 256 decode steps at) as the optimum; the cache length 1 to
the context length (the Pipeline sizes its cache to the context); the prefill length 1 to the
context, optimum one image plus a prompt.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from vilau_rt.model.config import VilaUConfig

from .ops import PLUGIN_NAMESPACE, PLUGIN_VERSION, TRT_OPSET
from .tensorrt_lint import CREATORS, plugins_used

PLUGIN_LIBRARY = "libvilau_trt_plugins.so"
BUILD_SCRIPT = "build_engines.sh"
ENGINE_DIR = "engines"
MAX_IMAGES = 8  # images the vision / pixel decoder graphs take at once (video: 8 frames)
WORKSPACE_MIB = 2048
_PRINT_LIBRARY = (
    "from vilau_rt.backends.tensorrt_backend import plugin_library; print(plugin_library())"
)


def dim_ranges(cfg: VilaUConfig, max_batch: int) -> dict[str, dict[str, tuple[int, int, int]]]:
    """(min, opt, max) of every symbolic dim, per graph (dims named in ``graph_specs``)."""
    ctx = cfg.llm.context_length
    h, w = cfg.grid
    batch = (1, min(2, max_batch), max_batch)
    images = (1, 1, max(1, max_batch // 2))
    llm = {"batch": batch, "cache_len": (1, ctx, ctx)}
    return {
        "vision": {"batch": (1, 1, MAX_IMAGES)},
        "pixel_decoder": {"batch": (1, 1, MAX_IMAGES)},
        "llm_prefill": {**llm, "seq": (1, min(h * w + 64, ctx), ctx)},
        "llm_decode": llm,
        "lm_head": {"rows": batch},
        "depth_decode": {"rows2": (2, 2, 2 * images[2]), "images": images},
    }


def profiles(graphs: dict[str, dict], cfg: VilaUConfig, max_batch: int) -> dict:
    """{graph: {input: {min, opt, max}}} for the inputs with a symbolic dim."""
    ranges = dim_ranges(cfg, max_batch)
    out: dict[str, dict] = {}
    for graph, entry in graphs.items():
        dims = ranges[graph]
        shapes = {}
        for inp in entry["inputs"]:
            if all(isinstance(d, int) for d in inp["shape"]):
                continue  # static (the 0-d sampling settings, say): no profile entry
            unknown = [d for d in inp["shape"] if isinstance(d, str) and d not in dims]
            if unknown:
                raise ValueError(f"{graph}.{inp['name']}: no profile range for dims {unknown}")
            shapes[inp["name"]] = {
                key: [dims[d][i] if isinstance(d, str) else d for d in inp["shape"]]
                for i, key in enumerate(("min", "opt", "max"))
            }
        out[graph] = shapes
    return out


def finish_tensorrt_bundle(
    root: Path, cfg: VilaUConfig, graphs: dict[str, dict], precision: str, max_batch: int
) -> dict:
    """Writes ``root/build_engines.sh``; returns the manifest's ``tensorrt`` section."""
    import onnx

    used = set()
    for entry in graphs.values():
        used |= plugins_used(onnx.load(str(root / entry["file"]), load_external_data=False))
    section = {
        "parser_opset": TRT_OPSET,
        "plugins": {
            "library": PLUGIN_LIBRARY,
            "version": PLUGIN_VERSION,
            "namespace": PLUGIN_NAMESPACE,
            "creators": {name: list(CREATORS[name]) for name in sorted(used)},
        },
        "max_batch": max_batch,
        "fp16": precision == "fp16",
        "workspace_mib": WORKSPACE_MIB,
        "profiles": profiles(graphs, cfg, max_batch),
        "engine_dir": ENGINE_DIR,
        "build_script": BUILD_SCRIPT,
    }
    script = root / BUILD_SCRIPT
    script.write_text(build_script(graphs, section))
    script.chmod(0o755)
    return section


def _shapes(flag: str, shapes: dict, key: str) -> str:
    spec = ",".join(f"{name}:{'x'.join(map(str, s[key]))}" for name, s in shapes.items())
    return f"--{flag}={spec}"


def build_script(graphs: dict[str, dict], section: dict) -> str:
    """A POSIX shell script: one trtexec line per graph, plans into ``engines/``."""
    lines = [
        "#!/bin/sh",
        "# Builds the TensorRT engines of this bundle with trtexec, on the device that runs them",
        "# (a plan is tied to the TensorRT version and the GPU). Written by vilau-rt export",
        "# --target tensorrt. Override with environment variables:",
        "#   VILAU_RT_TRT_PLUGINS  libvilau_trt_plugins.so (default: the one pip installed)",
        "#   PYTHON                the Python that has vilau_rt installed (default: python3)",
        "#   TRTEXEC               trtexec (default: on PATH, else JetPack's /usr/src/tensorrt/bin)",
        "#   ENGINES               output folder (default: engines/ in this bundle)",
        "# --setPluginsToSerialize embeds the library only in version-compatible plans; whoever",
        "# loads a plan still loads the library (trtexec --dynamicPlugins, the tensorrt backend).",
        "set -eu",
        'cd "$(dirname "$0")"',
        'PYTHON="${PYTHON:-python3}"',
        f'PLUGINS="${{VILAU_RT_TRT_PLUGINS:-$("$PYTHON" -c {shlex.quote(_PRINT_LIBRARY)})}}"',
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
        f'ENGINES="${{ENGINES:-{section["engine_dir"]}}}"',
        'mkdir -p "$ENGINES"',
    ]
    mib = section["workspace_mib"]
    for graph, entry in graphs.items():
        args = [
            '"$TRTEXEC"',
            shlex.quote(f"--onnx={entry['file']}"),
            f'--saveEngine="$ENGINES/{graph}.plan"',
            '--dynamicPlugins="$PLUGINS"',
            '--setPluginsToSerialize="$PLUGINS"',
            f"--memPoolSize=workspace:{mib}",  # MiB
        ]
        shapes = section["profiles"][graph]
        if shapes:
            args += [_shapes(f, shapes, k) for f, k in
                     (("minShapes", "min"), ("optShapes", "opt"), ("maxShapes", "max"))]  # fmt: skip
        # fp32 bundles: fp32 math (trtexec, like the builder, allows TF32 unless told not to)
        args.append("--fp16" if section["fp16"] else "--noTF32")
        lines.append(f'echo "building $ENGINES/{graph}.plan" >&2')
        lines.append(" \\\n    ".join(args))
    return "\n".join(lines) + "\n"
