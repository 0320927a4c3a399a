"""`segdeploy lint --target tensorrt`: what keeps an ONNX graph from building or fusing in TensorRT,
found by reading the graph (no TensorRT needed). Every finding names its node.

Rules, from onnx-tensorrt's operator matrix and restrictions and TensorRT's fusion guide:
unsupported-op, shape-input-dtype, shape-path-op, resize-mode, reduce-axes, cumsum-axis,
int64-range, attention-scale, attention-head-size, attention-pattern, layernorm-primitive."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from segdeploy.graph_io import all_nodes, load_graph
from segdeploy.tensorrt.environment import check_trt_version, parse_version

DEFAULT_TRT_VERSION = "10.14"
# Not parsed by onnx-tensorrt (operators.md); ops outside the default domain are refused too.
UNSUPPORTED = frozenset({
    "BitShift", "ConcatFromSequence", "ConvInteger", "Det", "DynamicQuantizeLinear", "MatMulInteger",
    "MaxRoiPool", "Multinomial", "NegativeLogLikelihoodLoss", "QLinearConv", "QLinearMatMul",
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringNormalizer", "TfIdfVectorizer", "Unique",
    "Optional", "OptionalGetElement", "OptionalHasElement", "Col2Im", "ImageDecoder", "RegexFullMatch",
    "StringConcat", "StringSplit",
})
MIN_VERSION = {"Attention": (10, 14), "RMSNormalization": (10, 14), "RotaryEmbedding": (10, 14), "Gelu": (10, 0)}
# Inputs whose values decide shapes (TensorRT shape tensors), by op.
SHAPE_INPUTS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Resize": (2, 3), "Upsample": (1,),
    "Slice": (1, 2, 3, 4), "Range": (0, 1, 2), "OneHot": (1,), "TopK": (1,), "Pad": (1,), "Split": (1,),
}
SHAPE_ONLY_OPS = ("Shape", "Size")  # their outputs depend on the input's shape, not its values
RESIZE_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"})
INT32 = (np.iinfo(np.int32).min, np.iinfo(np.int32).max)
# "to the end" (and, reversed, "past the start") in Slice starts/ends; the parser clamps them
INT64_SENTINELS = (np.iinfo(np.int64).min, np.iinfo(np.int64).min + 1, np.iinfo(np.int64).max)


@dataclass
class Finding:
    rule: str
    node: str
    message: str
    severity: str = "error"


@dataclass
class LintReport:
    graph: str
    trt_version: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def passed(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        return data


class _Graph:
    """Index of a graph: producers, consumers, constants, value types and (where inferable) shapes."""

    def __init__(self, model) -> None:
        import onnx
        from onnx import numpy_helper

        self.model = model
        graph = model.graph
        self.nodes = all_nodes(graph)  # TensorRT parses an If's sides too
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.inputs = {v.name: v for v in graph.input if v.name not in self.constants}
        self.shapes = _concrete_shapes(model)
        self.onnx = onnx

    def attr(self, node, name, default=None):
        for attribute in node.attribute:
            if attribute.name == name:
                return self.onnx.helper.get_attribute_value(attribute)
        return default

    def label(self, node) -> str:
        return node.name or f"{node.op_type}->{node.output[0]}"


def _concrete_shapes(model) -> dict[str, tuple]:
    """Shapes after inference with every symbolic input dim set to 4 (for head sizes; best effort)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in copy.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param or not dim.dim_value:
                dim.Clear()
                dim.dim_value = 4
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, data_prop=True)
    except Exception:
        return {}
    shapes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    return shapes


def _shape_influencers(g: _Graph) -> set[str]:
    """Every tensor whose values reach a shape input (stopping at Shape/Size)."""
    queue = deque(
        node.input[i] for node in g.nodes for i in SHAPE_INPUTS.get(node.op_type, ()) if i < len(node.input) and node.input[i]
    )
    for node in g.nodes:
        if node.op_type in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "Squeeze", "Unsqueeze", "CumSum") and len(node.input) > 1:
            queue.append(node.input[1])
    seen: set[str] = set()
    while queue:
        name = queue.popleft()
        if name in seen:
            continue
        seen.add(name)
        node = g.producer.get(name)
        if node is None or node.op_type in SHAPE_ONLY_OPS:
            continue
        queue.extend(i for i in node.input if i)
    return seen


def _check_ops(g: _Graph, version: tuple[int, ...], findings: list[Finding]) -> None:
    for node in g.nodes:
        if node.domain not in ("", "ai.onnx"):
            findings.append(Finding("unsupported-op", g.label(node), f"{node.domain}::{node.op_type} is not an ONNX-domain op; TensorRT's parser does not read it"))
        elif node.op_type in UNSUPPORTED:
            findings.append(Finding("unsupported-op", g.label(node), f"{node.op_type} is not supported by onnx-tensorrt"))
        elif node.op_type in MIN_VERSION and version < MIN_VERSION[node.op_type]:
            need = ".".join(str(v) for v in MIN_VERSION[node.op_type])
            findings.append(Finding("unsupported-op", g.label(node), f"{node.op_type} needs TensorRT {need} or newer"))


def _check_shapes(g: _Graph, findings: list[Finding]) -> None:
    influencers = _shape_influencers(g)
    for name, value in g.inputs.items():
        elem = value.type.tensor_type.elem_type
        if name in influencers and elem not in (6, 7):  # INT32, INT64
            findings.append(Finding(
                "shape-input-dtype", name,
                f"input {name} feeds shape computations (a shape tensor) but is {g.onnx.TensorProto.DataType.Name(elem)}; TensorRT needs int32/int64 there",
            ))
    for node in g.nodes:
        if node.op_type in ("NonZero", "OneHot", "Tile") and any(o in influencers for o in node.output):
            findings.append(Finding("shape-path-op", g.label(node), f"{node.op_type} computes a shape tensor; TensorRT cannot (broadcast instead of repeat/tile)"))


def _check_restrictions(g: _Graph, findings: list[Finding]) -> None:
    for node in g.nodes:
        label = g.label(node)
        if node.op_type == "Resize":
            if g.attr(node, "antialias", 0):
                findings.append(Finding("resize-mode", label, "Resize with antialias is not supported"))
            mode = g.attr(node, "coordinate_transformation_mode", b"half_pixel")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in RESIZE_MODES:
                findings.append(Finding("resize-mode", label, f"Resize coordinate_transformation_mode {mode!r} is not supported"))
        elif node.op_type.startswith("Reduce") and len(node.input) > 1 and node.input[1] and node.input[1] not in g.constants:
            findings.append(Finding("reduce-axes", label, f"{node.op_type} axes must be an initializer"))
        elif node.op_type == "CumSum" and node.input[1] not in g.constants:
            findings.append(Finding("cumsum-axis", label, "CumSum axis must be a build-time constant"))
    for node in g.nodes:
        for index, name in enumerate(node.input):
            array = g.constants.get(name)
            if array is None or array.dtype != np.int64 or array.size == 0:
                continue
            values = array[~np.isin(array, INT64_SENTINELS)] if node.op_type == "Slice" and index in (1, 2) else array
            if values.size and (values.min() < INT32[0] or values.max() > INT32[1]):
                findings.append(Finding("int64-range", g.label(node), f"INT64 input {name} holds values outside the int32 range"))


def _upstream(g: _Graph, name: str, through: tuple[str, ...]) -> list:
    """Nodes walked back from ``name`` through ops in ``through`` (first input), nearest first."""
    chain = []
    node = g.producer.get(name)
    while node is not None:
        chain.append(node)
        if node.op_type not in through:
            break
        node = g.producer.get(node.input[0])
    return chain


def _check_attention(g: _Graph, findings: list[Finding]) -> None:
    for softmax in (n for n in g.nodes if n.op_type == "Softmax"):
        label = g.label(softmax)
        chain = _upstream(g, softmax.input[0], ("Add", "Cast", "Where", "Div", "Mul", "Reshape"))
        first = chain[-1] if chain and chain[-1].op_type in ("MatMul", "FusedMatMul") else None
        if first is None:
            continue  # not an attention softmax
        between = [n.op_type for n in chain[:-1]]
        after = g.consumers.get(softmax.output[0], [])
        if "Div" in between or ("Mul" in between and any(g.constants.get(n.input[1]) is not None for n in chain[:-1] if n.op_type == "Mul")):
            findings.append(Finding("attention-scale", label, f"the scale is applied after the first MatMul ({g.label(first)}); TensorRT fuses MHA when it is applied to q or k before it"))
        if "Reshape" in between or any(c.op_type == "Reshape" for c in after):
            findings.append(Finding("attention-pattern", label, "a Reshape sits inside MatMul -> Softmax -> MatMul (grouped softmax); TensorRT's MHA fusion will not match"))
        q_shape = g.shapes.get(first.input[0])
        if q_shape and q_shape[-1]:
            head = q_shape[-1]
            if head % 8 or not 16 <= head <= 256:
                findings.append(Finding("attention-head-size", label, f"head size {head} is outside 16..256 or not a multiple of 8; no fused MHA kernel"))


def _check_layernorm(g: _Graph, findings: list[Finding]) -> None:
    for node in g.nodes:
        if node.op_type != "ReduceMean":
            continue
        users = g.consumers.get(node.output[0], [])
        subtract = next((u for u in users if u.op_type == "Sub"), None)
        if subtract is None:
            continue
        frontier, seen_ops = [subtract], set()
        for _ in range(6):
            frontier = [c for n in frontier for c in g.consumers.get(n.output[0], [])]
            seen_ops |= {n.op_type for n in frontier}
        if {"Pow", "Sqrt"} & seen_ops or "ReduceMean" in seen_ops:
            findings.append(Finding("layernorm-primitive", g.label(node), "LayerNorm written as ReduceMean/Sub/Pow/Sqrt; export it as LayerNormalization (opset 17) so TensorRT runs its fp32 normalization layer"))


def lint_graph(path: Path, trt_version: str = DEFAULT_TRT_VERSION) -> LintReport:
    """Lint an ONNX file for TensorRT ``trt_version``."""
    check_trt_version(trt_version)
    g = _Graph(load_graph(path))
    report = LintReport(str(path), trt_version)
    _check_ops(g, parse_version(trt_version), report.findings)
    _check_shapes(g, report.findings)
    _check_restrictions(g, report.findings)
    _check_attention(g, report.findings)
    _check_layernorm(g, report.findings)
    return report


def render_lint(report: LintReport) -> str:
    lines = [f"lint {report.graph} for TensorRT {report.trt_version}:"]
    lines += [f"  {f.severity.upper():7} {f.rule:20} {f.node}: {f.message}" for f in report.findings]
    verdict = "clean" if report.passed else f"{len(report.errors)} error(s)"
    lines.append(f"{'PASS' if report.passed else 'FAIL'}: {verdict}")
    return "\n".join(lines)
