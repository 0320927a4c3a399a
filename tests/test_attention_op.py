"""The `--attention onnx` rules (segdeploy.attention_op): each of the four block shapes fires on our
traced plain graph where that shape occurs, the fused graph computes what the plain one does, and a
block the Attention operator would not reproduce is left alone. (Every fused form passing verify's
whole matrix is tests/test_forms_matrix.py's.)"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from segdeploy.attention_op import ATTENTION_OPSET, attention_rules, fuse_attention
from segdeploy.bench import bench_feeds
from segdeploy.contract import TOLERANCES
from segdeploy.errors import BadInputError
from segdeploy.forms import AttentionForm, Precision
from segdeploy.registry import family_of_variant
from test_rewrites import traced

VARIANT = "sam_vit_b"
# blocks per rule on SAM's plain graph: the 4 whose keys are the prompt tokens (2 self-attentions,
# 2 image-to-token) carry the padding-slot mask, the 3 token-to-image ones (keys: the image) do not;
# the low-precision forms wrap each softmax in Casts to and from float
FIRES = {
    Precision.FP32: {"AttentionMasked": 4, "Attention": 3, "AttentionMaskedCast": 0, "AttentionCast": 0},
    Precision.FP16: {"AttentionMasked": 0, "Attention": 0, "AttentionMaskedCast": 4, "AttentionCast": 3},
}


def plain(precision: Precision) -> onnx.ModelProto:
    """The graph export hands to fuse_attention for ``--attention onnx`` at ``precision``."""
    return traced(VARIANT, attention=AttentionForm.ONNX, opset=ATTENTION_OPSET, precision=precision)


def run(model: onnx.ModelProto, feeds) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    outputs = session.run(None, {k: v for k, v in feeds.items() if k in names})
    return {o.name: value.astype(np.float32) for o, value in zip(session.get_outputs(), outputs)}


@pytest.mark.parametrize("precision", list(FIRES), ids=lambda p: p.value)
def test_each_rule_fires_where_its_block_is_and_keeps_the_function(precision, fresh_seed):
    import onnx_ir as ir
    from onnx import version_converter
    from onnxscript.rewriter import pattern

    model = plain(precision)
    counts = {}
    for rule in attention_rules():  # each rule alone on its own copy
        ir_model = ir.serde.deserialize_model(version_converter.convert_version(model, ATTENTION_OPSET))
        counts[rule.name] = pattern.RewriteRuleSet([rule]).apply_to_model(ir_model)
    assert counts == FIRES[precision]

    fused, replaced = fuse_attention(model)
    assert replaced == 7
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("Attention") == 7 and "Softmax" not in ops
    onnx.checker.check_model(fused, full_check=True)
    feeds = bench_feeds(3, 4, (600, 900), np.random.default_rng(fresh_seed), postprocess=True, family=family_of_variant(VARIANT))
    # within verify's bounds for the precision (fp16: the fused kernel rounds differently, a few ulps of a logit)
    tolerance = TOLERANCES[precision.value]
    ours, reference = run(fused, feeds), run(model, feeds)
    assert ours.keys() == reference.keys() == {"masks", "iou_predictions", "low_res_masks"}
    for name in ours:
        bound = tolerance.iou_pred_abs if name == "iou_predictions" else tolerance.logit_abs
        np.testing.assert_allclose(ours[name], reference[name], rtol=0, atol=bound, err_msg=name)


def _block(softmax_axis: int) -> onnx.ModelProto:
    """A lone q @ k^T -> Softmax -> @ v block at opset 17, q, k and v [1, 2, 3, 4]."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "k_t"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["weights"], axis=softmax_axis),
        helper.make_node("MatMul", ["weights", "v"], ["out"]),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 2, 3, 4]) for name in ("q", "k", "v")]
    graph = helper.make_graph(nodes, "block", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_softmax_over_another_axis_is_not_fused():
    """Fault injection: the same block with Softmax over the query axis is not attention; no rule may take it."""
    fused, replaced = fuse_attention(_block(-1))
    assert replaced == 1 and [n.op_type for n in fused.graph.node] == ["Attention"]
    with pytest.raises(BadInputError, match="no attention block matched"):
        fuse_attention(_block(2))
