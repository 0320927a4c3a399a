"""SAM 2 graphs: ONNX against eager and against the sam2 package, ragged and multi-image batches
against single runs, fp16 typed graphs, the TensorRT form's lint and profiles, fault injection, and
bench against the sam2 modules' own export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from sam2_oracle import official_outputs
from torch.nn import functional as F
from typer.testing import CliRunner

from segdeploy.graph_io import all_nodes
from segdeploy.cli import app
from segdeploy.compare import contract_problems
from segdeploy.contract import TOLERANCES, GraphLayout, MaskOutput
from segdeploy.families.sam2.baseline import official_modules
from segdeploy.families.sam2.cases import SAM2_MATRIX, draw_case
from segdeploy.families.sam2.weights import load_decoder
from segdeploy.graph_io import read_metadata, value_specs
from segdeploy.runners.factory import make_runner
from segdeploy.runners.torch_runner import TorchRunner
from segdeploy.verify import VerifyOptions, check_case, render_report, verify_graph
from segdeploy.registry import get_family

SAM2 = get_family("sam2")

runner = CliRunner()
VARIANT = "sam2.1_hiera_tiny"  # the session graphs' variant (conftest), random weights seed 0


def test_graph_declares_the_sam2_contract(sam2_exported):
    model = onnx.load(str(sam2_exported.path))
    meta = read_metadata(model)
    assert (meta["family"], meta["variant"], meta["contract_version"]) == ("sam2", VARIANT, "1")
    layout = GraphLayout(MaskOutput.MULTI, postprocess=True, family=SAM2)
    assert contract_problems(value_specs(model.graph.input), value_specs(model.graph.output), layout) == []
    names = [v.name for v in model.graph.input]
    assert names[:3] == ["image_embeddings", "high_res_feats_0", "high_res_feats_1"] and names[-1] == "orig_im_size"
    assert [v.name for v in model.graph.output] == ["masks", "iou_predictions", "low_res_masks", "object_score_logits"]
    assert not {"Tile", "OneHot", "NonZero", "ScatterND"} & {n.op_type for n in all_nodes(model.graph)}


ROWS = [spec for spec in SAM2_MATRIX if spec.name in ("ragged mixed prompts", "tiny image")]  # the rest: verify's matrix


@pytest.mark.parametrize("spec", ROWS, ids=[s.name for s in ROWS])
def test_onnx_matches_eager_and_the_sam2_package(spec, sam2_exported, rng):
    """onnxruntime against eager (every output, ragged batch against each prompt alone) and against
    the sam2 package's modules (masks: its low-res logits resized straight to the original size)."""
    decoder, _ = load_decoder(VARIANT, seed=0)
    case = draw_case(spec, rng)
    metadata = read_metadata(onnx.load(str(sam2_exported.path)))
    with TorchRunner(decoder, SAM2.layout(MaskOutput.MULTI, True)) as eager, make_runner(
        "onnxruntime", sam2_exported.path, metadata, SAM2.layout(MaskOutput.MULTI, True)
    ) as ort:
        result = check_case(eager, ort, case, TOLERANCES["fp32"])
        got = ort.infer(case.feeds)
    assert result.passed, [(o.name, o.failure) for o in result.outputs] + [result.ragged and result.ragged.failure]
    assert (result.ragged is not None) == case.is_ragged
    want = official_outputs(official_modules(decoder), case.feeds, multimask=True)
    assert np.abs(got["low_res_masks"] - want["low_res_masks"]).max() <= 1e-3
    assert np.abs(got["iou_predictions"] - want["iou_predictions"]).max() <= 1e-4
    assert np.abs(got["object_score_logits"] - want["object_score_logits"]).max() <= 1e-4
    masks = F.interpolate(torch.from_numpy(want["low_res_masks"]), size=spec.orig_size, mode="bilinear", align_corners=False).numpy()
    assert got["masks"].shape == masks.shape
    assert np.abs(got["masks"] - masks).max() <= 1e-4 * np.abs(masks).max()


def test_multi_image_batches_equal_single_runs(sam2_multi, fresh_seed):
    """verify's multi-image matrix: every prompt of a call against that prompt alone on its own image."""
    report = verify_graph(VerifyOptions(onnx=sam2_multi.path, cases=3, seed=fresh_seed))
    assert report.passed, render_report(report)
    assert [c.images for c in report.cases] == [1, 2, 3]
    assert all(c.ragged is not None and c.ragged.passed for c in report.cases[1:])


def test_fp16_graph_passes_verify_and_lints_clean(sam2_fp16, fresh_seed):
    report = verify_graph(VerifyOptions(onnx=sam2_fp16.path, cases=3, seed=fresh_seed))
    assert report.passed, render_report(report)
    assert report.precision == "fp16"
    assert report.worst("low_res_masks", "mask_iou_worst") >= 0.98
    assert report.worst("masks", "mask_iou_worst") >= 0.98
    result = runner.invoke(app, ["lint", str(sam2_fp16.path)])
    assert result.exit_code == 0, result.output


def test_one_perturbed_weight_fails_verify(sam2_exported, tmp_path, rng):
    from test_verify import perturb_one_weight

    faulty = tmp_path / "faulty.onnx"
    where = perturb_one_weight(sam2_exported.path, faulty, rng)
    report = verify_graph(VerifyOptions(onnx=faulty, cases=2, seed=int(rng.integers(1 << 30))))
    assert not report.passed, f"perturbing {where} went unnoticed"


def test_tensorrt_profiles_carry_the_high_res_maps(sam2_multi, sam2_fp16):
    line = runner.invoke(app, ["build-engine", "--onnx", str(sam2_fp16.path), "--prompts", "1:8:32", "--print-trtexec", "--trt-version", "10.14"])
    assert line.exit_code == 0, line.output
    assert "--minShapes=image_embeddings:1x256x64x64,high_res_feats_0:1x32x256x256,high_res_feats_1:1x64x128x128,point_coords:1x1x2" in line.output
    assert "--stronglyTyped" in line.output and "orig_im_size:16x16" in line.output  # typed graph; the shape tensor takes values
    line = runner.invoke(app, ["build-engine", "--onnx", str(sam2_multi.path), "--images", "1:2:4", "--print-trtexec", "--trt-version", "10.14"])
    assert line.exit_code == 0, line.output
    assert "--maxShapes=image_embeddings:4x256x64x64,high_res_feats_0:4x32x256x256,high_res_feats_1:4x64x128x128,image_index:64" in line.output


def test_bench_against_the_sam2_modules_export(sam2_exported, tmp_path, rng):
    """The baseline (the sam2 modules exported as they are) computes our graph's function, with a
    dynamic prompt count; bench runs it beside ours."""
    from segdeploy.bench import BenchOptions, bench_feeds, run_bench
    from segdeploy.bench import baseline_runner

    decoder, _ = load_decoder(VARIANT, seed=0)
    baseline = SAM2.export_baseline(decoder, tmp_path / "official.onnx")
    feeds = bench_feeds(3, 4, (480, 640), rng, True, family=SAM2)
    feeds["has_mask_input"] = np.array([1.0, 0.0, 1.0], np.float32)
    feeds["mask_input"] = (10 * rng.standard_normal(feeds["mask_input"].shape)).astype(np.float32)
    with baseline_runner(SAM2, baseline) as official, TorchRunner(decoder, SAM2.layout(MaskOutput.MULTI, True)) as eager:
        got, want = official.infer(feeds), eager.infer(feeds)
    assert np.abs(got["low_res_masks"] - want["low_res_masks"]).max() <= 1e-3
    assert np.abs(got["iou_predictions"] - want["iou_predictions"]).max() <= 1e-4
    report = run_bench(BenchOptions(onnx=sam2_exported.path, prompts=(2,), points=(3,), runs=1, warmup=0, baseline=str(baseline), out_dir=tmp_path, name="s2"))
    assert {r.backend for r in report.rows} == {"onnxruntime", "official"}
    assert all(r.ratio_to_baseline is not None for r in report.rows)


def test_cli_refuses_what_sam2_graphs_do_not_have(tmp_path):
    result = runner.invoke(app, ["export", "--variant", "sam2_hiera_tiny", "--signature", "official", "--mask-output", "all", "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "sam2 decoder" in result.output
