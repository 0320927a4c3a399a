"""The TensorRT lint on hand-made bad graphs (one fault each), on our exports and on the official one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from segdeploy.cli import app
from segdeploy.export import ExportOptions, export_onnx
from segdeploy.forms import AttentionForm, Precision, Target
from segdeploy.tensorrt.lint import lint_graph

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def save(tmp_path, nodes, inputs, outputs, inits=(), opset=17, name="g.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def rules(path, version="10.14"):
    return {(f.rule, f.node) for f in lint_graph(path, version).errors}


def test_float_input_feeding_a_shape_is_flagged(tmp_path):
    nodes = [
        helper.make_node("Cast", ["size"], ["size_i"], to=I64, name="cast"),
        helper.make_node("Reshape", ["x", "size_i"], ["y"], name="reshape"),
    ]
    path = save(tmp_path, nodes, [vi("x", F, [4]), vi("size", F, [2])], [vi("y", F, None)])
    assert ("shape-input-dtype", "size") in rules(path)


def test_tile_on_a_shape_path_but_not_on_data(tmp_path):
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Tile", ["s", "reps"], ["s2"], name="tile_shape"),
        helper.make_node("Expand", ["x", "s2"], ["y"], name="expand"),
        helper.make_node("Tile", ["x", "reps"], ["z"], name="tile_data"),
    ]
    path = save(tmp_path, nodes, [vi("x", F, [2, 3])], [vi("y", F, None), vi("z", F, None)], [const("reps", np.array([1], np.int64))])
    found = rules(path)
    assert ("shape-path-op", "tile_shape") in found
    assert not any(node == "tile_data" for _, node in found)


def test_resize_antialias_and_mode(tmp_path):
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", antialias=1, name="aa"),
        helper.make_node("Resize", ["x", "", "scales"], ["z"], mode="linear", coordinate_transformation_mode="half_pixel_symmetric", name="sym"),
    ]
    path = save(tmp_path, nodes, [vi("x", F, [1, 1, 4, 4])], [vi("y", F, None), vi("z", F, None)], [const("scales", np.array([1, 1, 2, 2], np.float32))], opset=19)
    assert {("resize-mode", "aa"), ("resize-mode", "sym")} <= rules(path)


def test_reduce_axes_and_cumsum_axis_must_be_constant(tmp_path):
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="reduce"),
        helper.make_node("CumSum", ["x", "axis"], ["z"], name="cumsum"),
    ]
    inputs = [vi("x", F, [2, 3]), vi("axes", I64, [1]), vi("axis", I64, [])]
    path = save(tmp_path, nodes, inputs, [vi("y", F, None), vi("z", F, None)], opset=18)
    assert {("reduce-axes", "reduce"), ("cumsum-axis", "cumsum")} <= rules(path)


def test_int64_out_of_int32_range(tmp_path):
    nodes = [helper.make_node("Add", ["x", "big"], ["y"], name="add")]
    path = save(tmp_path, nodes, [vi("x", I64, [1])], [vi("y", I64, None)], [const("big", np.array([2**40], np.int64))])
    assert ("int64-range", "add") in rules(path)


def attention(scale_after: bool, head: int):
    """q [1,2,5,head] x k^T -> softmax -> x v; the scale before (Mul on q) or after (Div on logits)."""
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2], name="kt")]
    if scale_after:
        nodes += [helper.make_node("MatMul", ["q", "kt"], ["qk"], name="qk"), helper.make_node("Div", ["qk", "s"], ["logits"], name="div")]
    else:
        nodes += [helper.make_node("Mul", ["q", "s"], ["qs"], name="mul"), helper.make_node("MatMul", ["qs", "kt"], ["logits"], name="qk")]
    nodes += [helper.make_node("Softmax", ["logits"], ["w"], axis=-1, name="softmax"), helper.make_node("MatMul", ["w", "v"], ["y"], name="wv")]
    inputs = [vi(n, F, [1, 2, 5, head]) for n in ("q", "k", "v")]
    return nodes, inputs, [vi("y", F, None)], [const("s", np.array(0.25, np.float32))]


def test_attention_scale_after_matmul(tmp_path):
    assert ("attention-scale", "softmax") in rules(save(tmp_path, *attention(True, 32)))
    assert not rules(save(tmp_path, *attention(False, 32), name="ok.onnx"))


@pytest.mark.parametrize("head", [12, 20, 512])
def test_attention_head_size(tmp_path, head):
    assert ("attention-head-size", "softmax") in rules(save(tmp_path, *attention(False, head)))


def test_layernorm_as_primitive_reductions(tmp_path):
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], name="mean"),
        helper.make_node("Sub", ["x", "m"], ["d"], name="sub"),
        helper.make_node("Pow", ["d", "two"], ["p"], name="pow"),
        helper.make_node("ReduceMean", ["p"], ["v"], axes=[1], name="var"),
        helper.make_node("Sqrt", ["v"], ["s"], name="sqrt"),
        helper.make_node("Div", ["d", "s"], ["y"], name="div"),
    ]
    path = save(tmp_path, nodes, [vi("x", F, [1, 4, 2, 2])], [vi("y", F, None)], [const("two", np.array(2.0, np.float32))])
    assert ("layernorm-primitive", "mean") in rules(path)


def test_unsupported_ops_and_domains(tmp_path):
    nodes = [
        helper.make_node("Unique", ["x"], ["u"], name="unique"),
        helper.make_node("MultiHeadAttention", ["q", "q", "q"], ["y"], domain="com.microsoft", num_heads=1, name="mha"),
    ]
    path = save(tmp_path, nodes, [vi("x", F, [4]), vi("q", F, [1, 2, 8])], [vi("u", F, None), vi("y", F, None)])
    assert {("unsupported-op", "unique"), ("unsupported-op", "mha")} <= rules(path)
    attn = [helper.make_node("Attention", ["q", "q", "q"], ["y"], name="attn")]
    path = save(tmp_path, attn, [vi("q", F, [1, 2, 4, 16])], [vi("y", F, None)], opset=23, name="a.onnx")
    assert ("unsupported-op", "attn") in rules(path, "10.8")
    assert ("unsupported-op", "attn") not in rules(path, "10.14")


@pytest.mark.parametrize("precision,attention", [(Precision.FP32, None), (Precision.FP16, None), (Precision.FP16, AttentionForm.ONNX)])
def test_our_tensorrt_exports_lint_clean(tmp_path, precision, attention):
    opset = 23 if attention else 17
    graph = export_onnx(ExportOptions(target=Target.TENSORRT, precision=precision, attention=attention, opset=opset, out=tmp_path / "t.onnx")).path
    report = lint_graph(graph)
    assert report.passed, report.errors
    assert CliRunner().invoke(app, ["lint", str(graph)]).exit_code == 0


def test_fewtoken_form_is_reported_as_not_fusable(exported):
    assert any(f.rule == "attention-pattern" for f in lint_graph(exported.path).errors)


def test_the_official_export_does_not_lint_clean(tmp_path):
    from segdeploy.families.sam1.baseline import export_official
    from segdeploy.families.sam1.weights import load_decoder

    path = export_official(load_decoder(seed=0)[0].state_dict(), tmp_path / "official.onnx")
    found = {rule for rule, _ in rules(path)}
    assert {"shape-input-dtype", "attention-scale", "layernorm-primitive", "shape-path-op"} <= found
    result = CliRunner().invoke(app, ["lint", str(path)])
    assert result.exit_code == 1 and "orig_im_size" in result.output
