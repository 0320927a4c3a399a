"""The typed graphs' precision policy, checked on an exported ONNX model (the fp16 and bf16 tests)."""

from __future__ import annotations

import onnx


def assert_precision_policy(model: onnx.ModelProto, low: int) -> None:
    """``model`` (shapes inferred) does its matrix work in ``low`` (an onnx.TensorProto type: at
    least 90% of the mask decoder's MatMul/Gemm inputs), LayerNormalization and Softmax in fp32,
    and takes and returns float32 (and int64) only."""
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    fp32 = onnx.TensorProto.FLOAT
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and "/mask_decoder/" in n.name]
    assert matmuls and sum(types.get(n.input[0]) == low for n in matmuls) >= 0.9 * len(matmuls)
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert types[node.input[0]] == fp32, node.name  # the stated policy: these stay fp32
    assert {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]} <= {fp32, onnx.TensorProto.INT64}
