"""The `--attention onnx` form: the plain form's MatMul -> [Add mask] -> Softmax -> MatMul blocks
rewritten as the ONNX `Attention` operator (opset 23), which TensorRT 10.14+ and onnxruntime 1.23+
run as one fused kernel. The graph is traced at opset 20 and converted to 23 first."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from segdeploy.errors import BadInputError

ATTENTION_OPSET = 23


def _producers(graph):
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph):
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _attr(node, name, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def fuse_attention(model: onnx.ModelProto, opset: int = ATTENTION_OPSET) -> tuple[onnx.ModelProto, int]:
    """Convert to ``opset`` (23 or newer) and replace each attention block by one Attention node; returns the model
    and how many blocks were rewritten. Softmax in fp32 is kept (softmax_precision=FLOAT)."""
    model = version_converter.convert_version(model, opset)
    graph = model.graph
    producers, users = _producers(graph), _consumers(graph)
    replaced, remove = 0, set()
    new_nodes: dict[int, list] = {}
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        chain, name = [], softmax.input[0]
        node = producers.get(name)
        while node is not None and node.op_type in ("Add", "Cast"):
            chain.append(node)
            node = producers.get(node.input[0])
        if node is None or node.op_type != "MatMul":
            continue
        first = node
        transpose = producers.get(first.input[1])
        if transpose is None or transpose.op_type != "Transpose" or len(_attr(transpose, "perm", [])) != 4:
            continue
        after = users.get(softmax.output[0], [])
        while len(after) == 1 and after[0].op_type == "Cast":
            chain.append(after[0])
            after = users.get(after[0].output[0], [])
        if len(after) != 1 or after[0].op_type != "MatMul":
            continue
        second = after[0]
        masks = [n for n in chain if n.op_type == "Add"]
        prefix = softmax.name.rsplit("/", 1)[0] + "/fused_attention"
        # k^T came from Transpose(x, perm); k in [B, heads, S, d] is x under perm with its last two swapped
        perm = list(_attr(transpose, "perm"))
        key_perm = [perm[0], perm[1], perm[3], perm[2]]
        extra = []
        key = transpose.input[0]
        if key_perm != [0, 1, 2, 3]:
            key = f"{prefix}/key"
            extra.append(helper.make_node("Transpose", [transpose.input[0]], [key], perm=key_perm, name=key))
        inputs = [first.input[0], key, second.input[1]]
        if masks:
            mask = masks[0].input[1]
            # onnxruntime wants the mask's query axis spelled out: expand [B,1,1,Sk] to [B,1,Sq,Sk]
            shape_q, shape_k = f"{prefix}/shape_q", f"{prefix}/shape_k"
            extra += [
                helper.make_node("Shape", [first.input[0]], [shape_q], start=2, end=3, name=shape_q),
                helper.make_node("Shape", [key], [shape_k], start=2, end=3, name=shape_k),
                helper.make_node("Concat", [f"{prefix}/ones", shape_q, shape_k], [f"{prefix}/mask_shape"], axis=0, name=f"{prefix}/mask_shape"),
                helper.make_node("Expand", [mask, f"{prefix}/mask_shape"], [f"{prefix}/mask"], name=f"{prefix}/mask_expand"),
            ]
            graph.initializer.append(numpy_helper.from_array(np.ones(2, np.int64), f"{prefix}/ones"))
            inputs.append(f"{prefix}/mask")
        fused = helper.make_node(
            "Attention", inputs, [second.output[0]], name=prefix, scale=1.0, softmax_precision=onnx.TensorProto.FLOAT,
        )
        index = list(graph.node).index(second)
        new_nodes[index] = extra + [fused]
        remove |= {id(n) for n in (first, softmax, second, *chain)}
        if len(users.get(transpose.output[0], [])) == 1:
            remove.add(id(transpose))
        replaced += 1
    if not replaced:
        raise BadInputError("no attention block matched the plain form; --attention onnx starts from the plain form")
    rebuilt = []
    for index, node in enumerate(graph.node):
        rebuilt.extend(new_nodes.get(index, []))
        if id(node) not in remove:
            rebuilt.append(node)
    del graph.node[:]
    graph.node.extend(rebuilt)
    return model, replaced
