"""Work the onnxruntime form puts behind ``If`` nodes: parts of the graph that most calls' inputs make
unnecessary, run only when a call needs them. Each branch's fast side computes exactly what the full
side computes on such inputs (the same bits), so the graph's function is unchanged.

- ``mask_embedding``: the dense embedding of ``mask_input`` (mask downscaling: two strided convs,
  LayerNorms and GELUs over [B,1,256,256], then the 1x1 conv) runs only when some prompt's
  ``has_mask_input`` is not 0. When all are 0, every prompt's dense embedding is the no-mask
  embedding: the graph blends ``has * features + (1 - has) * no_mask``, and 0 * x + no_mask is
  no_mask exactly for finite x. A first click (SamPredictor's ``mask_input=None``) takes that side.
- ``identity_crop``: SAM's postprocessing (bilinear x4 to the model frame, crop the padding,
  bilinear to H x W) is one Resize when the crop and the second resize keep every pixel (the
  upsample's size equals the crop's and the original size: a 1024x1024 image). There the crop
  and the second resize would each copy the whole [B,M,H,W] output once more.

Both are protobuf passes, not onnxscript rewriter rules: they move a cone of nodes whose size and
shape vary by family and form into If subgraphs, and the rewriter's patterns match a fixed subgraph
and replace it with nodes of the same graph.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from segdeploy import contract
from segdeploy.graph_passes import constant_values, consumers

MASK_INPUT = contract.MASK_INPUT.name
HAS_MASK_INPUT = contract.HAS_MASK_INPUT.name


def apply_branches(model: onnx.ModelProto, no_mask: np.ndarray) -> dict[str, int]:
    """Apply every branch pass in place (``no_mask``: the prompt encoder's no-mask embedding [C]);
    returns how many Ifs each added."""
    return {"mask_embedding": branch_mask_embedding(model, no_mask), "identity_crop": branch_identity_crop(model)}


def _forward_cone(users: dict[str, list[onnx.NodeProto]], starts: Iterable[str]) -> set[int]:
    """ids of the nodes that read ``starts``, directly or through other nodes."""
    seen: set[int] = set()
    frontier = list(starts)
    while frontier:
        for node in users.get(frontier.pop(), []):
            if id(node) not in seen:
                seen.add(id(node))
                frontier.extend(node.output)
    return seen


def _backward_cone(producer: dict[str, onnx.NodeProto], value: str, within: set[int]) -> set[int]:
    """ids of the nodes in ``within`` that ``value`` is computed from."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and id(node) in within and id(node) not in seen:
            seen.add(id(node))
            stack.extend(node.input)
    return seen


def _self_contained(graph: onnx.GraphProto, users, branch: set[int], result: str) -> bool:
    """No value made inside ``branch`` but ``result`` is read outside it or is a graph output."""
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        if id(node) not in branch:
            continue
        for name in node.output:
            if name != result and (name in outputs or any(id(user) not in branch for user in users.get(name, []))):
                return False
    return True


def _copies(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    return copies


def _float_output(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _replace_with_if(graph: onnx.GraphProto, branch: set[int], cond_nodes: list[onnx.NodeProto], if_node: onnx.NodeProto) -> None:
    """Drop the ``branch`` nodes from the graph and put ``cond_nodes`` + ``if_node`` where the last of
    them stood: every value they read is made before it, and only later nodes read the result."""
    last = max(index for index, node in enumerate(graph.node) if id(node) in branch)
    kept: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        if index == last:
            kept.extend(cond_nodes + [if_node])
        elif id(node) not in branch:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _unique(graph: onnx.GraphProto, stem: str) -> str:
    names = {n.name for n in graph.node} | {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer}
    index = 0
    while f"{stem}_{index}" in names:
        index += 1
    return f"{stem}_{index}"


def _constant(graph: onnx.GraphProto, name: str, array: np.ndarray) -> str:
    unique = _unique(graph, name)
    graph.initializer.append(numpy_helper.from_array(array, unique))
    return unique


def branch_mask_embedding(model: onnx.ModelProto, no_mask: np.ndarray) -> int:
    """Put the dense mask embedding behind ``If(any has_mask_input != 0)``, with ``no_mask`` (the
    prompt encoder's no-mask embedding, [C] float32) on the other side; returns 1 if it did."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    if not {MASK_INPUT, HAS_MASK_INPUT} <= inputs:
        return 0
    no_mask = np.asarray(no_mask, np.float32).reshape(-1)
    channels = no_mask.size
    users = consumers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    mask_cone = _forward_cone(users, [MASK_INPUT])
    other_inputs = inputs - {MASK_INPUT, HAS_MASK_INPUT}
    other_cone = _forward_cone(users, other_inputs)

    def from_others(name: str) -> bool:
        node = producer.get(name)
        return name in other_inputs or (node is not None and id(node) in other_cone and id(node) not in mask_cone)

    # the dense embedding: where the mask's cone first meets a value of the image or the points
    join = next((n for n in graph.node if id(n) in mask_cone and any(from_others(i) for i in n.input)), None)
    if join is None:
        return 0
    dense = [i for i in join.input if i in producer and id(producer[i]) in mask_cone and id(producer[i]) not in other_cone]
    if len(dense) != 1:
        return 0
    dense = dense[0]
    branch = _backward_cone(producer, dense, mask_cone)
    if not branch or not _self_contained(graph, users, branch, dense):
        return 0
    shapes = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    info = shapes.get(dense)
    if info is None or info.type.tensor_type.elem_type != TensorProto.FLOAT:
        return 0
    dims = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
    channel_axes = [axis for axis, size in enumerate(dims) if axis > 0 and size == channels]
    if len(dims) < 2 or len(channel_axes) != 1:
        return 0
    # no mask anywhere: each prompt's embedding is no_mask, shaped [B, 1.., C, 1..] to broadcast as before
    view = [1] * len(dims)
    view[channel_axes[0]] = channels
    no_mask_name = _constant(graph, "mask_branch/no_mask", no_mask.reshape(view))
    ones_name = _constant(graph, "mask_branch/ones", np.ones(len(dims) - 1, np.int64))
    zero_name = _constant(graph, "mask_branch/zero", np.zeros((), np.float32))
    stem = _unique(graph, "mask_branch")
    else_nodes = [
        # the batch both inputs broadcast to, as the blend's was
        helper.make_node("Shape", [HAS_MASK_INPUT], [f"{stem}/has_batch"], end=1),
        helper.make_node("Shape", [MASK_INPUT], [f"{stem}/mask_batch"], end=1),
        helper.make_node("Concat", [f"{stem}/has_batch", ones_name], [f"{stem}/has_shape"], axis=0),
        helper.make_node("Concat", [f"{stem}/mask_batch", ones_name], [f"{stem}/mask_shape"], axis=0),
        helper.make_node("Expand", [no_mask_name, f"{stem}/has_shape"], [f"{stem}/per_has"]),
        helper.make_node("Expand", [f"{stem}/per_has", f"{stem}/mask_shape"], [f"{stem}/dense"]),
    ]
    then_nodes = _copies([n for n in graph.node if id(n) in branch])
    for node in then_nodes:  # the side's result gets a name of its own: the If's output keeps `dense`
        node.output[:] = [f"{stem}/with_mask" if name == dense else name for name in node.output]
    cond_nodes = [  # not all zero (a NaN is not zero: it takes the full side, as before)
        helper.make_node("Equal", [HAS_MASK_INPUT, zero_name], [f"{stem}/is_zero"]),
        helper.make_node("Cast", [f"{stem}/is_zero"], [f"{stem}/is_zero_int"], to=TensorProto.INT64),
        helper.make_node("ReduceMin", [f"{stem}/is_zero_int"], [f"{stem}/all_zero_int"], keepdims=0),
        helper.make_node("Cast", [f"{stem}/all_zero_int"], [f"{stem}/all_zero"], to=TensorProto.BOOL),
        helper.make_node("Not", [f"{stem}/all_zero"], [f"{stem}/any_mask"]),
    ]
    if_node = helper.make_node(
        "If", [f"{stem}/any_mask"], [dense], name=f"{stem}/If",
        then_branch=helper.make_graph(then_nodes, "with_mask_input", [], [_float_output(f"{stem}/with_mask")]),
        else_branch=helper.make_graph(_named(else_nodes), "without_mask_input", [], [_float_output(f"{stem}/dense")]),
    )
    _replace_with_if(graph, branch, _named(cond_nodes), if_node)
    return 1


def _named(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """``nodes`` with each unnamed one named after its first output (unique: outputs are)."""
    for node in nodes:
        if not node.name:
            node.name = node.output[0]
    return nodes


def _sizes_spatial(producer: dict[str, onnx.NodeProto], sizes: str) -> str | None:
    """The [H, W] part of a Resize's ``sizes`` written as Concat(Shape(x)[:2], [H, W]) (how the
    tracer writes F.interpolate(size=...)); None for any other form."""
    concat = producer.get(sizes)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 2:
        return None
    head = producer.get(concat.input[0])
    if head is None or head.op_type != "Slice" or producer.get(head.input[0]) is None or producer[head.input[0]].op_type != "Shape":
        return None
    return concat.input[1]


def _constant_value(constants: dict[str, np.ndarray], producer: dict[str, onnx.NodeProto], name: str) -> np.ndarray | None:
    """The value of a constant (``graph_passes.constant_values``), or of a Concat of constants (a merged Slice's starts)."""
    if name in constants:
        return constants[name]
    node = producer.get(name)
    if node is not None and node.op_type == "Concat":
        parts = [_constant_value(constants, producer, i) for i in node.input]
        if all(p is not None for p in parts):
            return np.concatenate(parts)
    return None


def _linear_half_pixel(node: onnx.NodeProto) -> bool:
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (node.op_type == "Resize" and attributes.get("mode") == b"linear"
            and attributes.get("coordinate_transformation_mode") == b"half_pixel" and len(node.input) == 4 and bool(node.input[3]))


def branch_identity_crop(model: onnx.ModelProto) -> int:
    """Put Resize -> crop Slice -> Resize behind ``If(both are identities)``, one Resize on the fast
    side; returns how many it did."""
    graph = model.graph
    done = 0
    while True:
        users = consumers(graph)
        producer = {o: n for n in graph.node for o in n.output}
        constants = constant_values(graph)
        match = None
        for last in graph.node:
            crop = producer.get(last.input[0]) if last.op_type == "Resize" else None
            first = producer.get(crop.input[0]) if crop is not None and crop.op_type == "Slice" else None
            if first is None or not (_linear_half_pixel(first) and _linear_half_pixel(last)) or len(crop.input) < 4:
                continue
            starts, axes = (_constant_value(constants, producer, crop.input[i]) for i in (1, 3))
            steps = _constant_value(constants, producer, crop.input[4]) if len(crop.input) > 4 and crop.input[4] else np.ones(2)
            spatial = [_sizes_spatial(producer, node.input[3]) for node in (first, last)]
            if (starts is None or axes is None or steps is None or (starts != 0).any() or (steps != 1).any()
                    or sorted(int(a) % 4 for a in axes) != [2, 3] or None in spatial):
                continue
            match = first, crop, last, spatial, (axes % 4).tolist()
            break
        if match is None:
            return done
        first, crop, last, (first_hw, last_hw), axes = match
        branch = {id(first)} | (_forward_cone(users, [first.output[0]]) & _backward_cone(producer, last.output[0], {id(n) for n in graph.node}))
        if not _self_contained(graph, users, branch, last.output[0]):
            return done
        stem = _unique(graph, "crop_branch")
        ends = crop.input[2]
        if axes != [2, 3]:  # ends in the order [H, W]
            ends = f"{stem}/ends_hw"
        cond_nodes = [] if axes == [2, 3] else [
            helper.make_node("Gather", [crop.input[2], _constant(graph, "crop_branch/hw_order", np.argsort(axes).astype(np.int64))], [ends], axis=0),
        ]
        cond_nodes += [
            helper.make_node("Concat", [first_hw, last_hw], [f"{stem}/sizes"], axis=0),
            helper.make_node("Concat", [ends, ends], [f"{stem}/crop"], axis=0),
            helper.make_node("Equal", [f"{stem}/sizes", f"{stem}/crop"], [f"{stem}/same"]),
            helper.make_node("Cast", [f"{stem}/same"], [f"{stem}/same_int"], to=TensorProto.INT64),
            helper.make_node("ReduceMin", [f"{stem}/same_int"], [f"{stem}/all_same_int"], keepdims=0),
            helper.make_node("Cast", [f"{stem}/all_same_int"], [f"{stem}/identity"], to=TensorProto.BOOL),
        ]
        # the last resize's sizes from the first's input (the crop keeps axes 0 and 1), outside the
        # branch: the traced form reads them off the crop's output, and onnx's shape inference of
        # opset 23 loses that value inside a subgraph
        cond_nodes += [
            helper.make_node("Shape", [first.input[0]], [f"{stem}/leading"], end=2),
            helper.make_node("Concat", [f"{stem}/leading", last_hw], [f"{stem}/last_sizes"], axis=0),
        ]
        one_resize, upsample, cut, resize = _copies([first, first, crop, last])
        one_resize.name, one_resize.output[0] = f"{stem}/Resize", f"{stem}/upsampled"
        resize.input[3], resize.output[0] = f"{stem}/last_sizes", f"{stem}/resized"
        if_node = helper.make_node(
            "If", [f"{stem}/identity"], [last.output[0]], name=f"{stem}/If",
            then_branch=helper.make_graph([one_resize], "upsample_only", [], [_float_output(f"{stem}/upsampled")]),
            else_branch=helper.make_graph([upsample, cut, resize], "crop_and_resize", [], [_float_output(f"{stem}/resized")]),
        )
        _replace_with_if(graph, branch, _named(cond_nodes), if_node)
        done += 1
