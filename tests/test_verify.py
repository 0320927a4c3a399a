"""verify: passes on a faithful graph, catches injected faults, refuses foreign weights."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from segdeploy.cases import single_prompt
from segdeploy.families.sam1.cases import SAM1_MATRIX as MATRIX
from segdeploy.families.sam1.cases import draw_case
from segdeploy.compare import compare_output
from segdeploy.contract import TOLERANCES
from segdeploy.errors import BadInputError
from segdeploy.graph_io import set_metadata
from segdeploy.verify import VerifyOptions, render_report, verify_graph
from segdeploy.registry import get_family

SAM1 = get_family("sam1")


def test_full_matrix_passes(exported, fresh_seed):
    report = verify_graph(VerifyOptions(onnx=exported.path, seed=fresh_seed))
    assert report.passed, render_report(report)
    assert len(report.cases) == len(MATRIX)
    assert any(c.ragged is not None for c in report.cases)
    assert report.worst("low_res_masks", "max_abs") <= TOLERANCES["fp32"].logit_abs
    assert report.worst("masks", "mask_iou_worst") >= TOLERANCES["fp32"].mask_iou_worst
    json.dumps(report.to_dict())


def perturb_one_weight(source, target, rng) -> str:
    """Add 2 max|W| to one element of one randomly drawn weight on the path every prompt takes with
    no ReLU behind it (attention projections, the upscaler): a unit behind a dead ReLU changes nothing."""
    model = onnx.load(str(source))
    on_path = {
        name
        for node in model.graph.node
        if "attn" in node.name or node.op_type == "ConvTranspose"
        for name in node.input
    }
    weights = [t for t in model.graph.initializer if t.name in on_path and np.prod(t.dims) >= 4096]
    tensor = weights[int(rng.integers(len(weights)))]
    array = numpy_helper.to_array(tensor).copy()
    index = tuple(int(rng.integers(size)) for size in array.shape)
    array[index] += 2 * np.abs(array).max()
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    onnx.save(model, str(target))
    return f"{tensor.name}{list(index)}"


def test_one_perturbed_weight_fails_verify(exported, tmp_path, rng):
    faulty = tmp_path / "faulty.onnx"
    where = perturb_one_weight(exported.path, faulty, rng)
    report = verify_graph(VerifyOptions(onnx=faulty, cases=3, seed=int(rng.integers(1 << 30))))
    assert not report.passed, f"perturbing {where} went unnoticed"


def test_ignored_slots_take_no_part(exported, rng):
    """A ragged batch equals each prompt run alone, whatever sits in the ignored slots."""
    from segdeploy import contract
    from segdeploy.contract import MaskOutput
    from segdeploy.runners.ort_runner import OrtRunner

    case = draw_case(MATRIX[5], rng)
    assert case.is_ragged
    names = [s.name for s in contract.output_specs(MaskOutput.MULTI, True)]
    with OrtRunner(exported.path, SAM1.layout().inputs(), names) as runner:
        batched = runner.infer(case.feeds)
        for b in range(case.spec.prompts):
            alone = runner.infer(single_prompt(case, b))
            for name in ("low_res_masks", "iou_predictions"):
                np.testing.assert_allclose(batched[name][b], alone[name][0], atol=1e-4, rtol=0)


def test_checkpoint_graph_needs_the_same_checkpoint(tmp_path):
    from segdeploy.export import ExportOptions, export_onnx
    from segdeploy.families.sam1.weights import load_decoder

    # the official layout: image_encoder.* beside the decoder keys (tiny stand-ins for the encoder)
    state = {"image_encoder.pos_embed": torch.zeros(1, 4, 4, 8), **load_decoder(seed=3)[0].state_dict()}
    good, other = tmp_path / "sam_vit_b_01ec64.pth", tmp_path / "other.pth"
    torch.save(state, good)
    state["mask_decoder.iou_token.weight"] = state["mask_decoder.iou_token.weight"] + 1
    torch.save(state, other)
    graph = export_onnx(ExportOptions(checkpoint=good, out=tmp_path / "g.onnx")).path
    assert verify_graph(VerifyOptions(onnx=graph, checkpoint=good, cases=2)).passed
    with pytest.raises(BadInputError, match="is not the checkpoint"):
        verify_graph(VerifyOptions(onnx=graph, checkpoint=other, cases=1))
    with pytest.raises(BadInputError, match="pass it with --checkpoint"):
        verify_graph(VerifyOptions(onnx=graph, cases=1))


def test_random_graph_refuses_a_checkpoint(exported, tmp_path):
    path = tmp_path / "c.pth"
    torch.save({}, path)
    with pytest.raises(BadInputError, match="random weights"):
        verify_graph(VerifyOptions(onnx=exported.path, checkpoint=path, cases=1))


def test_foreign_graph_is_refused(tmp_path, exported_model):
    model = onnx.ModelProto()
    model.CopyFrom(exported_model)
    del model.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(model, str(path))
    with pytest.raises(BadInputError, match="no segdeploy metadata"):
        verify_graph(VerifyOptions(onnx=path, cases=1))


def test_contract_drift_fails_the_check(tmp_path, exported_model):
    model = onnx.ModelProto()
    model.CopyFrom(exported_model)
    model.graph.output[1].name = "scores"
    for node in model.graph.node:
        node.output[:] = ["scores" if o == "iou_predictions" else o for o in node.output]
    set_metadata(model, {**{p.key.split(".", 1)[1]: p.value for p in model.metadata_props}})
    path = tmp_path / "drift.onnx"
    onnx.save(model, str(path))
    report = verify_graph(VerifyOptions(onnx=path, cases=1))
    assert report.contract_problems and not report.passed


def test_compare_flags_nan_and_shape():
    tolerance = TOLERANCES["fp32"]
    ref = np.ones((1, 3, 4, 4), np.float32)
    bad = ref.copy()
    bad[0, 0, 0, 0] = np.nan
    assert not compare_output("low_res_masks", ref, bad, tolerance).passed
    assert not compare_output("low_res_masks", ref, ref[:, :2], tolerance).passed
    assert compare_output("low_res_masks", ref, ref + 5e-4, tolerance).passed
    assert not compare_output("low_res_masks", ref, ref + 2e-3, tolerance).passed


def test_no_postprocess_single_mask_graph_verifies(tmp_path, fresh_seed):
    from segdeploy.contract import MaskOutput
    from segdeploy.export import ExportOptions, export_onnx

    graph = export_onnx(ExportOptions(mask_output=MaskOutput.SINGLE, postprocess=False, out=tmp_path / "g.onnx")).path
    report = verify_graph(VerifyOptions(onnx=graph, cases=3, seed=fresh_seed))
    assert report.passed, render_report(report)
    assert {o.name for c in report.cases for o in c.outputs} == {"iou_predictions", "low_res_masks"}


def test_the_reference_evaluator_runs_the_onnxruntime_forms_contrib_ops(exported, exported_model, fresh_seed):
    """`verify --backend onnx-reference` on the default (onnxruntime-form) graph: its com.microsoft
    Gelu/BiasGelu run on the evaluator (a NotImplementedError traceback before: found by the CLI
    property test) and agree with eager within fp32's bounds."""
    contrib = {node.op_type for node in exported_model.graph.node if node.domain == "com.microsoft"}
    assert {"Gelu", "BiasGelu"} <= contrib, contrib
    report = verify_graph(VerifyOptions(onnx=exported.path, cases=1, seed=fresh_seed, max_side=64, backend="onnx-reference"))
    assert report.candidate == "onnx-reference" and report.passed, render_report(report)
