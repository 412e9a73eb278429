"""Would TensorRT 10.3's ONNX parser take this graph? A static check of what we can know here.

The parser (JetPack 6) imports default-domain opsets up to 20 and maps any node it has no
importer for to a plugin creator by op_type alone (the domain is ignored), filling the creator's
fields from the node's attributes by name; ``plugin_version`` / ``plugin_namespace`` attributes
pick the creator's version and namespace. ``lint`` mirrors that fallback:

- the default-domain opset is <= 20 and only the ``vilau`` custom domain is imported;
- every default-domain node is an op of the opset-20 standard set (``onnx.defs``) that the
  parser imports (``PARSER_UNSUPPORTED``), within the restrictions of its operator table that
  our graphs can meet or miss (``axes`` of Reduce* / Squeeze / Unsqueeze constant; Resize modes);
- no ``com.microsoft`` (or other) node: every node outside the default domain names one of our
  creators (``CREATORS``), carries exactly that creator's fields as INT attributes, and
  ``plugin_version`` / ``plugin_namespace`` equal to the library's;
- no model-local functions (the parser would take their calls for plugins).

Source of the op table: onnx-tensorrt ``docs/operators.md`` at the 10.1 GA release (commit
96e7811, the newest in our mirror; 10.3 adds importers, it removes none we know of). What it
cannot know: each importer's dtype limits and the rest of that table's restrictions, and whether
the engines build. Only TensorRT can tell; this check did not run TensorRT.
"""

from __future__ import annotations

from pathlib import Path

import onnx

PARSER_MAX_OPSET = 20  # TensorRT 10.3 (JetPack 6)
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
# The creators of libvilau_trt_plugins.so and their fields (csrc/trt/plugins/*.h: kName and
# field_names(); tests/export/test_tensorrt_export.py checks this table against those sources).
CREATORS: dict[str, tuple[str, ...]] = {
    "RVQLookup": (),
    "RVQEncode": ("n_embed", "depth"),
    "DepthDecode": ("n_layer", "n_head", "embed_dim", "depth"),
    "W4A16Gemm": ("group_size",),
}
PLUGIN_ATTRS = ("plugin_version", "plugin_namespace")
# Standard ops with no importer (onnx-tensorrt docs/operators.md, 10.1 GA, "N" rows).
PARSER_UNSUPPORTED = frozenset([
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
    "BlackmanWindow", "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger",
    "DFT", "Det", "DynamicQuantizeLinear", "HammingWindow", "HannWindow", "ImageDecoder",
    "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement",
    "QLinearConv", "QLinearMatMul", "RegexFullMatch", "STFT", "SequenceAt", "SequenceConstruct",
    "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap",
    "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer",
    "StringSplit", "TfIdfVectorizer", "Unique",
])  # fmt: skip
# Ops whose input 1 (axes) the parser needs as an initializer or a Constant.
CONSTANT_AXES = frozenset([
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Squeeze", "Unsqueeze",
])  # fmt: skip
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDINATES = {
    "half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"
}  # fmt: skip
CUSTOM_DOMAIN = "vilau"


def _standard(op_type: str, opset: int) -> bool:
    try:
        onnx.defs.get_schema(op_type, opset, "")
    except onnx.defs.SchemaError:
        return False
    return True


def lint(model: onnx.ModelProto | str | Path) -> list[str]:
    """Problems that would stop TensorRT 10.3's parser, one line each; [] when none were found."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    problems = []
    opsets = {o.domain: o.version for o in model.opset_import}
    default = opsets.get("", opsets.get("ai.onnx"))
    if default is None or default > PARSER_MAX_OPSET:
        problems.append(f"default-domain opset {default} (the parser takes <= {PARSER_MAX_OPSET})")
    for domain in opsets:
        if domain not in ("", "ai.onnx", CUSTOM_DOMAIN):
            problems.append(f"opset import of domain {domain!r}")
    for f in model.functions:
        problems.append(f"model-local function {f.domain}::{f.name}")
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in _nodes(model.graph) if n.op_type == "Constant" for o in n.output}
    for node in _nodes(model.graph):
        where = f"node {node.name or '?'} ({node.domain or 'ai.onnx'}::{node.op_type})"
        if node.domain in ("", "ai.onnx"):
            if not _standard(node.op_type, min(default or 0, PARSER_MAX_OPSET)):
                problems.append(f"{where}: not in the opset-{PARSER_MAX_OPSET} standard set")
            elif node.op_type in PARSER_UNSUPPORTED:
                problems.append(f"{where}: the parser has no importer for it")
            problems += [f"{where}: {p}" for p in _restrictions(node, constants)]
            continue
        problems += [f"{where}: {p}" for p in _plugin_problems(node)]
    return problems


def _restrictions(node: onnx.NodeProto, constants: set[str]) -> list[str]:
    out = []
    axes = node.input[1] if node.op_type in CONSTANT_AXES and len(node.input) > 1 else ""
    if axes and axes not in constants:
        out.append("axes must be an initializer or a Constant")
    if node.op_type == "Resize":
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("mode", b"nearest").decode()
        coords = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
        if mode not in RESIZE_MODES:
            out.append(f"Resize mode {mode!r} (the parser takes {sorted(RESIZE_MODES)})")
        if coords not in RESIZE_COORDINATES:
            out.append(f"Resize coordinate_transformation_mode {coords!r} is not supported")
        if attrs.get("antialias", 0):
            out.append("Resize antialias is not supported")
    return out


def _plugin_problems(node: onnx.NodeProto) -> list[str]:
    if node.domain != CUSTOM_DOMAIN:
        return [f"domain {node.domain!r} has no importer and is not ours"]
    fields = CREATORS.get(node.op_type)
    if fields is None:
        return [f"no plugin creator named {node.op_type!r} (creators: {sorted(CREATORS)})"]
    attrs = {a.name: a for a in node.attribute}
    out = []
    for name in fields:
        if name not in attrs:
            out.append(f"field {name!r} missing")
        elif attrs[name].type != onnx.AttributeProto.INT:
            out.append(f"field {name!r} is not an INT attribute (the creator reads int32)")
    for name in sorted(set(attrs) - set(fields) - set(PLUGIN_ATTRS)):
        out.append(f"attribute {name!r} is not a field of creator {node.op_type}")
    for name, want in zip(PLUGIN_ATTRS, (PLUGIN_VERSION, PLUGIN_NAMESPACE), strict=True):
        a = attrs.get(name)
        if a is None:
            out.append(f"{name} missing (want {want!r})")
        elif a.type != onnx.AttributeProto.STRING:
            out.append(f"{name} is not a STRING attribute (want {want!r})")
        elif a.s.decode() != want:
            out.append(f"{name} is {a.s.decode()!r}, want {want!r}")
    return out


def _nodes(graph: onnx.GraphProto):
    """Every node, those of subgraphs (If / Loop / Scan bodies) included."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _nodes(g)


def plugins_used(model: onnx.ModelProto) -> set[str]:
    """Creator names of the plugin nodes in ``model``."""
    return {n.op_type for n in _nodes(model.graph) if n.op_type in CREATORS}
