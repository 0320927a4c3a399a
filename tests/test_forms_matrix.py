"""Every graph form and precision the CLI can write passes verify's whole matrix, for both families:
every row (mask inputs, ragged batches, 16 points, tiny and large images, 32 prompts) at original
sizes shrunk to at most 256 pixels a side (verify --max-side), where the resizing is cheap and the
rows are what they were. The fp16 graphs of both targets run on onnxruntime's CPU provider, the
TensorRT form's included (what build-engine consumes)."""

from __future__ import annotations

import onnx
import pytest
from typed_graphs import assert_precision_policy

from segdeploy.export import ExportOptions, export_onnx
from segdeploy.forms import AttentionForm, Precision, Target, UpscaleForm
from segdeploy.verify import VerifyOptions, render_report, verify_graph

VARIANTS = {"sam1": "sam_vit_b", "sam2": "sam2.1_hiera_tiny"}
FORMS = [(a, u) for a in AttentionForm for u in UpscaleForm]
MAX_SIDE = 256


def verify_whole_matrix(path, seed):
    report = verify_graph(VerifyOptions(onnx=path, seed=seed, max_side=MAX_SIDE))
    assert report.passed, render_report(report)
    return report


@pytest.mark.parametrize("family", VARIANTS)
@pytest.mark.parametrize("attention,upscale", FORMS, ids=[f"{a.value}-{u.value}" for a, u in FORMS])
def test_every_form_passes_the_whole_matrix(family, attention, upscale, tmp_path, fresh_seed):
    opset = 23 if attention is AttentionForm.ONNX else 17
    report = export_onnx(ExportOptions(variant=VARIANTS[family], attention=attention, upscale=upscale, opset=opset, out=tmp_path / "g.onnx"))
    if attention is AttentionForm.ONNX:  # every attention block became one Attention operator
        assert report.op_counts.get("Attention") == 7 and report.opset == 23
    result = verify_whole_matrix(report.path, fresh_seed)
    rows = {case.name.split(" (at ")[0] for case in result.cases}
    assert len(rows) == len(result.cases) >= 9 and any(case.ragged for case in result.cases)


@pytest.mark.parametrize("family", VARIANTS)
@pytest.mark.parametrize("target", list(Target))
def test_fp16_graphs_are_typed_and_pass_the_whole_matrix(family, target, tmp_path, fresh_seed):
    report = export_onnx(ExportOptions(variant=VARIANTS[family], target=target, precision=Precision.FP16, out=tmp_path / "h.onnx"))
    assert_precision_policy(onnx.shape_inference.infer_shapes(onnx.load(str(report.path))), onnx.TensorProto.FLOAT16)
    result = verify_whole_matrix(report.path, fresh_seed)
    assert result.precision == "fp16"


def test_max_side_keeps_every_row_and_shrinks_sizes(exported, fresh_seed):
    result = verify_graph(VerifyOptions(onnx=exported.path, seed=fresh_seed, max_side=64))
    assert result.passed, render_report(result)
    assert len(result.cases) == 10 and any("(at 48x64)" in case.name for case in result.cases)  # 3000x4000 -> 48x64
