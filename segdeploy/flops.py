"""Counting the matrix FLOPs of a decoder graph per prompt, by running it once with every
MatMul/Gemm/Conv/ConvTranspose/Attention output exposed (exact shapes, whatever the graph form).

Counted: 2 x multiply-adds of those operators, in the main graph and in the side of each ``If`` the
feeds take (segdeploy.graph_branches: the mask input's convs count only when some prompt has one).
Not counted: element-wise work, normalisation, softmax and resizes (memory-bound, a few percent of
the arithmetic)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MATRIX_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "FusedMatMul", "Attention")


@dataclass(frozen=True)
class FlopCount:
    total: int
    by_op: dict[str, int]
    prompts: int

    @property
    def per_prompt(self) -> float:
        return self.total / self.prompts


def _node_flops(node, shapes: dict[str, tuple[int, ...]], weights: dict[str, tuple[int, ...]]) -> int:
    def shape(name: str) -> tuple[int, ...]:
        return shapes.get(name) or weights[name]

    out = shapes[node.output[0]]
    if node.op_type in ("MatMul", "FusedMatMul"):
        a = shape(node.input[0])
        trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
        inner = a[-2] if trans_a else a[-1]
        return 2 * int(np.prod(out)) * inner
    if node.op_type == "Gemm":
        a = shape(node.input[0])
        trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
        return 2 * int(np.prod(out)) * (a[0] if trans_a else a[1])
    if node.op_type == "Conv":
        w = shape(node.input[1])
        return 2 * int(np.prod(out)) * int(np.prod(w[1:]))
    if node.op_type == "ConvTranspose":
        x, w = shape(node.input[0]), shape(node.input[1])
        return 2 * int(np.prod(x)) * int(np.prod(w[1:]))
    if node.op_type == "Attention":  # q [B,h,Sq,d] or [B,Sq,h*d]; two products of Sq x Sk x d per head
        q, k = shape(node.input[0]), shape(node.input[1])
        if len(q) == 4:
            batch, heads, sq, d = q
            sk = k[2]
            return 2 * 2 * batch * heads * sq * sk * d
        return 2 * 2 * q[0] * q[1] * k[1] * q[2]
    return 0


def count_flops(path: Path, feeds: dict[str, np.ndarray]) -> FlopCount:
    """Run ``path`` once on ``feeds`` with matrix-op outputs exposed and count their FLOPs."""
    import onnx

    model = _taken_branches_inlined(onnx.load(str(path)), feeds)
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    targets = [n for n in model.graph.node if n.op_type in MATRIX_OPS]
    existing = {o.name for o in model.graph.output}
    for node in targets:
        for name in node.input[:2]:
            if name and name not in weights and name not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                existing.add(name)
        if node.output[0] not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=node.output[0]))
            existing.add(node.output[0])
    session = _session(model)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, feeds)
    shapes = {name: tuple(np.shape(value)) for name, value in zip(names, values)}
    for name, array in feeds.items():
        shapes[name] = tuple(array.shape)
    by_op: dict[str, int] = {}
    for node in targets:
        by_op[node.op_type] = by_op.get(node.op_type, 0) + _node_flops(node, shapes, weights)
    prompts = int(feeds["point_coords"].shape[0])
    return FlopCount(total=sum(by_op.values()), by_op=by_op, prompts=prompts)


def _session(model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # the probe and inlined models leave the other side's weights unused
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _taken_branches_inlined(model, feeds: dict[str, np.ndarray]):
    """``model`` with each top-level ``If`` replaced by the nodes of the side ``feeds`` take (its
    condition read from one run), so every matrix op that runs is a main-graph node."""
    import onnx

    ifs = [node for node in model.graph.node if node.op_type == "If"]
    if not ifs:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=node.input[0]) for node in ifs)
    conditions = _session(probe).run(None, feeds)
    nodes = []
    for node in model.graph.node:
        if node.op_type != "If":
            nodes.append(node)
            continue
        taken = {a.name: a.g for a in node.attribute}["then_branch" if bool(conditions[ifs.index(node)].reshape(-1)[0]) else "else_branch"]
        for index, inner in enumerate(taken.node):  # a subgraph names its nodes in its own scope, if at all
            copy = onnx.NodeProto()
            copy.CopyFrom(inner)
            copy.name = f"{node.name}/{inner.name or index}"
            nodes.append(copy)
        nodes.extend(onnx.helper.make_node("Identity", [inner.name], [outer]) for inner, outer in zip(taken.output, node.output))
    inlined = onnx.ModelProto()
    inlined.CopyFrom(model)
    del inlined.graph.node[:]
    inlined.graph.node.extend(nodes)
    return inlined
