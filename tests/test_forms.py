"""Graph forms and precisions: targets pick their forms, FLOPs as stated, refusals (every form and
precision on the whole matrix: tests/test_forms_matrix.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from segdeploy.bench import bench_feeds
from segdeploy.errors import MissingDependencyError
from segdeploy.export import ExportOptions, export_onnx
from segdeploy.flops import count_flops
from segdeploy.forms import AttentionForm, Precision, Target, UpscaleForm
from segdeploy.verify import VerifyOptions, render_report, verify_graph
from segdeploy.registry import get_family

SAM1 = get_family("sam1")



def test_targets_pick_their_forms(tmp_path):
    assert ExportOptions(target=Target.ONNXRUNTIME).form.attention is AttentionForm.FEWTOKEN
    trt = ExportOptions(target=Target.TENSORRT).form
    assert (trt.attention, trt.upscale) == (AttentionForm.PLAIN, UpscaleForm.CONVTRANSPOSE)
    assert ExportOptions(target=Target.TENSORRT, attention=AttentionForm.FEWTOKEN).form.attention is AttentionForm.FEWTOKEN


def flops_per_prompt(path, points: int, has_mask_input: float = 0.0) -> float:
    feeds = bench_feeds(1, points, (1024, 1024), np.random.default_rng(0), postprocess=True, family=SAM1)
    feeds["has_mask_input"] = np.full_like(feeds["has_mask_input"], has_mask_input)
    return count_flops(path, feeds).per_prompt


def test_counted_flops(exported, tmp_path):
    """The counter against an independent closed-form count of SAM's decoder (tests/flop_reference.py),
    on our plain form (its mask-input convs run only with a mask input: segdeploy.graph_branches) and
    on the official export (always runs them); the claims about our forms are relative to it."""
    from flop_reference import sam_decoder_flops

    from segdeploy.families.sam1.baseline import export_official
    from segdeploy.families.sam1.weights import load_decoder
    from segdeploy.runners.prompt_by_prompt import official_feeds

    plain = export_onnx(ExportOptions(attention=AttentionForm.PLAIN, upscale=UpscaleForm.CONVTRANSPOSE, out=tmp_path / "p.onnx")).path
    official = export_official(load_decoder(seed=0)[0].state_dict(), tmp_path / "official.onnx")
    for points in (3, 12):
        assert abs(flops_per_prompt(plain, points) / sam_decoder_flops(points, masks=3, mask_input=False) - 1) <= 0.01, points
        assert abs(flops_per_prompt(plain, points, has_mask_input=1.0) / sam_decoder_flops(points, masks=3) - 1) <= 0.01, points
        feeds = official_feeds(bench_feeds(1, points, (1024, 1024), np.random.default_rng(0), postprocess=True, family=SAM1), 0, SAM1.image_inputs)
        assert abs(count_flops(official, feeds).per_prompt / sam_decoder_flops(points, masks=4) - 1) <= 0.01, points
    # the default onnxruntime form at SAM's usual 3 point slots: at most 60% of SAM's plain count
    assert flops_per_prompt(exported.path, 3) <= 0.6 * sam_decoder_flops(3, masks=3, mask_input=False)
    # the few-token form stays below the plain one up to 12 point slots (17 tokens)
    assert flops_per_prompt(exported.path, 12) < flops_per_prompt(plain, 12)


def test_bf16_graph_is_refused_cleanly_where_the_cpu_cannot_run_it(tmp_path):
    report = export_onnx(ExportOptions(precision=Precision.BF16, out=tmp_path / "b.onnx"))
    onnx.checker.check_model(onnx.load(str(report.path)), full_check=True)
    try:
        result = verify_graph(VerifyOptions(onnx=report.path, cases=2))
    except MissingDependencyError as error:
        assert "cannot run" in str(error)
    else:  # an onnxruntime with bf16 CPU kernels: then it must verify
        assert result.passed, render_report(result)


def test_onnx_attention_form_needs_opset_23(tmp_path):
    from segdeploy.errors import BadInputError

    with pytest.raises(BadInputError, match="--opset 23"):
        export_onnx(ExportOptions(attention=AttentionForm.ONNX, opset=20, out=tmp_path / "g.onnx"))
    with pytest.raises(BadInputError, match="attention onnx"):
        export_onnx(ExportOptions(attention=AttentionForm.PLAIN, opset=23, out=tmp_path / "g.onnx"))


def test_channels_last_weights_follow_the_module_to_another_device():
    import torch

    from segdeploy.contract import MaskOutput
    from segdeploy.forms import GraphForm
    from segdeploy.families.sam1.graph import SamDecoderGraph as DecoderGraph
    from segdeploy.families.sam1.weights import load_decoder

    decoder, _ = load_decoder(seed=1)
    graph = DecoderGraph(decoder, MaskOutput.MULTI, True, GraphForm(AttentionForm.FEWTOKEN, UpscaleForm.MATMUL)).to("meta")
    derived = graph.decoder.mask_decoder.channels_last_upscaling_weights()
    assert all(t.device == torch.device("meta") for t in derived)
    assert "upscale_first_weight" not in decoder.state_dict()  # not part of the checkpoint contract
