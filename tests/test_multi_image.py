"""The multi-image graph flavor: contract, eager and ONNX equal to single-image runs, verify with
a fault injected, lint, TensorRT profiles and bench."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from test_verify import perturb_one_weight
from typer.testing import CliRunner

from segdeploy.graph_io import all_nodes
from segdeploy import contract
from segdeploy.cases import single_prompt
from segdeploy.families.sam1.cases import SAM1_MULTI_IMAGE_MATRIX as MULTI_IMAGE_MATRIX
from segdeploy.families.sam1.cases import draw_case
from segdeploy.cli import app
from segdeploy.contract import GraphLayout, MaskOutput
from segdeploy.forms import GraphForm
from segdeploy.graph_io import read_metadata, value_specs
from segdeploy.families.sam1.graph import MultiImageDecoderGraph
from segdeploy.families.sam1.graph import SamDecoderGraph as DecoderGraph
from segdeploy.runners.ort_runner import OrtRunner
from segdeploy.tensorrt.profiles import EngineProfile, Range
from segdeploy.families.sam1.weights import load_decoder
from segdeploy.registry import get_family

SAM1 = get_family("sam1")

runner = CliRunner()
MULTI = GraphLayout(MaskOutput.ALL, postprocess=False, multi_image=True, family=SAM1)


def test_multi_image_graph_follows_its_contract(exported_multi):
    model = onnx.load(str(exported_multi.path))
    declared = [(s.name, s.dtype, s.dims) for s in value_specs(model.graph.input)]
    assert declared == [(s.name, s.dtype, s.dims) for s in MULTI.inputs()]
    assert [s.name for s in value_specs(model.graph.output)] == MULTI.output_names()
    assert read_metadata(model)["images"] == "multi" and read_metadata(model)["postprocess"] == "0"
    assert not {"Tile", "OneHot", "NonZero"} & {node.op_type for node in all_nodes(model.graph)}


def test_single_image_contract_is_unchanged(exported_model):
    assert [s.name for s in value_specs(exported_model.graph.input)] == [
        "image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]
    assert value_specs(exported_model.graph.input)[0].dims == (1, 256, 64, 64)
    assert read_metadata(exported_model)["images"] == "single"


@pytest.mark.parametrize("form", [GraphForm(), GraphForm(attention="fewtoken", upscale="matmul")], ids=["plain", "fewtoken+matmul"])
def test_eager_multi_image_equals_single_image_module_per_prompt(form, fresh_seed):
    """Each prompt of a multi-image batch against the single-image module on its own image."""
    rng = np.random.default_rng(fresh_seed)
    decoder, _ = load_decoder(seed=fresh_seed % 1000)
    multi = MultiImageDecoderGraph(decoder, MaskOutput.ALL, form).eval()
    single = DecoderGraph(decoder, MaskOutput.ALL, postprocess=False, form=form).eval()
    case = draw_case(MULTI_IMAGE_MATRIX[2], rng, postprocess=False, multi_image=True)
    with torch.no_grad():
        iou, low = multi(*(torch.from_numpy(case.feeds[s.name]) for s in MULTI.inputs()))
        for b in range(case.spec.prompts):
            feeds = single_prompt(case, b)
            feeds[contract.IMAGE_EMBEDDINGS.name] = case.feeds[contract.IMAGE_EMBEDDINGS.name][case.feeds["image_index"][b]][None]
            one_iou, one_low = single(*(torch.from_numpy(feeds[s.name]) for s in SAM1.layout(postprocess=False).inputs()))
            assert torch.abs(one_low[0] - low[b]).max() <= 1e-3
            assert torch.abs(one_iou[0] - iou[b]).max() <= 1e-4


def test_verify_passes_the_multi_image_graph_and_catches_a_fault(exported_multi, tmp_path, rng):
    report = tmp_path / "v.json"
    result = runner.invoke(app, ["verify", "--onnx", str(exported_multi.path), "--cases", "3", "--report", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["passed"] and [c["images"] for c in data["cases"]] == [s.images for s in MULTI_IMAGE_MATRIX[:3]]
    assert all(c["ragged"] is not None for c in data["cases"][1:]), "several images: each prompt is checked alone"
    faulty = tmp_path / "faulty.onnx"
    perturb_one_weight(exported_multi.path, faulty, rng)
    assert runner.invoke(app, ["verify", "--onnx", str(faulty), "--cases", "3"]).exit_code == 1


def test_image_index_out_of_range_is_bad_input(exported_multi, rng):
    from segdeploy.errors import BadInputError

    case = draw_case(MULTI_IMAGE_MATRIX[1], rng, postprocess=False, multi_image=True)
    case.feeds["image_index"] = np.array([0, 1, 2, 0], np.int64)
    with OrtRunner(exported_multi.path, MULTI.inputs(), MULTI.output_names()) as ort, pytest.raises(BadInputError, match="image_index"):
        ort.infer(case.feeds)


def test_tensorrt_form_lints_clean_and_profiles_carry_an_image_range(tmp_path):
    graph = tmp_path / "multi_trt.onnx"
    result = runner.invoke(app, ["export", "--multi-image", "--target", "tensorrt", "--out", str(graph)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["lint", str(graph)]).exit_code == 0
    line = runner.invoke(app, ["build-engine", "--onnx", str(graph), "--images", "1:4:8", "--prompts", "1:8:32", "--print-trtexec", "--trt-version", "10.14"])
    assert line.exit_code == 0, line.output
    assert "--minShapes=image_embeddings:1x256x64x64,image_index:1" in line.output
    assert "--maxShapes=image_embeddings:8x256x64x64,image_index:32" in line.output
    assert "orig_im_size" not in line.output
    shapes = EngineProfile(images=Range(2, 3, 5)).shapes(SAM1.layout(MaskOutput.MULTI, postprocess=False, multi_image=True))
    assert shapes["image_embeddings"] == ((2, 256, 64, 64), (3, 256, 64, 64), (5, 256, 64, 64))


def test_profile_check_names_the_image_count():
    from segdeploy.errors import BadInputError
    from segdeploy.tensorrt.sidecar import Sidecar, check_in_profile

    profile = EngineProfile(images=Range(1, 2, 4)).to_dict()
    sidecar = Sidecar("0", "10.14", "gpu", "9.0", "12", "fp16", "strong", [profile], [], "g.onnx", "", 17, {})
    check_in_profile(sidecar, 4, 3, None, images=4)
    with pytest.raises(BadInputError, match="on 5 images"):
        check_in_profile(sidecar, 4, 3, None, images=5)


def test_cli_refuses_multi_image_with_in_graph_postprocess_and_bench_images_on_single(exported, tmp_path):
    result = runner.invoke(app, ["export", "--multi-image", "--postprocess", "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "drop --postprocess" in result.output
    result = runner.invoke(app, ["bench", "--onnx", str(exported.path), "--images", "4", "--prompts", "1", "--points", "2", "--runs", "1", "--warmup", "0", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--multi-image" in result.output


def test_bench_spreads_prompts_over_images(exported_multi, tmp_path):
    from segdeploy.bench import BenchOptions, run_bench

    report = run_bench(BenchOptions(onnx=exported_multi.path, prompts=(4,), points=(2,), runs=1, warmup=0, images=3, out_dir=tmp_path, name="m"))
    assert [r.prompts for r in report.rows] == [4] and "multi-image (3 per call)" in report.form
