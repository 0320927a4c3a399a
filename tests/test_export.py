"""Structure, metadata, determinism and atomic writes of the exported graph."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from segdeploy.graph_io import all_nodes
from segdeploy import __version__, contract
from segdeploy.contract import MaskOutput
from segdeploy.errors import BadInputError
from segdeploy.export import ExportOptions, export_onnx
from segdeploy.graph_io import read_metadata, value_specs
from segdeploy.registry import get_family

SAM1 = get_family("sam1")


def test_inputs_and_outputs_follow_the_contract(exported_model):
    assert value_specs(exported_model.graph.input) == [
        contract.TensorSpec(s.name, s.dtype, s.dims, "") for s in SAM1.layout().inputs()
    ]
    assert value_specs(exported_model.graph.output) == [
        contract.TensorSpec(s.name, s.dtype, s.dims, "") for s in contract.output_specs(MaskOutput.MULTI, True)
    ]


def test_dynamic_axes_are_named(exported_model):
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in exported_model.graph.input}
    assert dims["point_coords"] == ["num_prompts", "num_points", 2]
    assert dims["point_labels"] == ["num_prompts", "num_points"]
    assert dims["image_embeddings"] == [1, 256, 64, 64]
    assert dims["orig_im_size"] == [2]


def test_no_tile_onehot_or_nonzero_and_layernorm_fused(exported_model):
    ops = [node.op_type for node in all_nodes(exported_model.graph)]
    assert not {"Tile", "OneHot", "NonZero", "ScatterND"} & set(ops)
    # 9 transformer LayerNorms + 1 LayerNorm2d in the upscaler + 2 in the mask downscaler (an If's side)
    assert ops.count("LayerNormalization") == 12
    assert "ReduceMean" not in ops and "Pow" not in ops and "Sqrt" not in ops


def test_layernorm2d_normalises_over_channels_only(exported_model):
    axes = [
        next((a.i for a in node.attribute if a.name == "axis"), -1)
        for node in all_nodes(exported_model.graph)
        if node.op_type == "LayerNormalization"
    ]
    assert set(axes) == {-1}  # channels moved last first; axis=1 on NCHW would also normalise H and W


def test_metadata_records_the_export(exported, exported_model):
    meta = read_metadata(exported_model)
    assert meta["version"] == __version__
    assert meta["contract_version"] == contract.CONTRACT_VERSION
    assert meta["variant"] == "sam_vit_b"
    assert (meta["weights"], meta["random_seed"], meta["weights_sha256"]) == ("random", "0", "")
    assert (meta["opset"], meta["mask_output"], meta["postprocess"]) == ("17", "multi", "1")
    onnx.checker.check_model(exported_model, full_check=True)


def test_export_is_deterministic(exported, tmp_path):
    again = export_onnx(ExportOptions(out=tmp_path / "again.onnx"))
    assert again.path.read_bytes() == exported.path.read_bytes()


@pytest.mark.parametrize("mask_output,m", [(MaskOutput.SINGLE, 1), (MaskOutput.ALL, 4)])
def test_mask_output_and_no_postprocess(mask_output, m, tmp_path):
    report = export_onnx(ExportOptions(mask_output=mask_output, postprocess=False, out=tmp_path / "g.onnx"))
    model = onnx.load(str(report.path))
    assert [v.name for v in model.graph.input][-1] == "has_mask_input"
    assert [v.name for v in model.graph.output] == ["iou_predictions", "low_res_masks"]
    assert model.graph.output[1].type.tensor_type.shape.dim[1].dim_value == m


@pytest.mark.parametrize("opset", [11, 16])
def test_old_opset_is_refused(opset, tmp_path):
    with pytest.raises(BadInputError, match="opset 17"):
        export_onnx(ExportOptions(opset=opset, out=tmp_path / "g.onnx"))
    assert not list(tmp_path.iterdir())


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "g.onnx"
    target.write_bytes(b"previous good file")

    def broken_checker(*_args, **_kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(onnx.checker, "check_model", broken_checker)
    with pytest.raises(RuntimeError, match="injected"):
        export_onnx(ExportOptions(out=target))
    assert target.read_bytes() == b"previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["g.onnx"]


def test_atomic_write_cleans_up_on_failure(tmp_path, monkeypatch):
    import os

    from segdeploy.graph_io import write_atomically

    target = tmp_path / "file.bin"

    def broken_replace(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(BadInputError, match="cannot write .*disk full"):
        write_atomically(target, b"x" * 100)
    assert not list(Path(tmp_path).iterdir())


def test_unwritable_output_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from segdeploy.cli import app

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(app, ["export", "--out", str(blocker / "g.onnx")])
    assert result.exit_code == 2 and "cannot write" in result.output


def test_opset_20_uses_gelu_operator(tmp_path):
    report = export_onnx(ExportOptions(opset=20, out=tmp_path / "g.onnx"))
    assert report.op_counts.get("Gelu", 0) >= 4 and "Erf" not in report.op_counts
