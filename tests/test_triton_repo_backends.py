"""`triton-repo` for Triton's own backends and devices: a TensorRT plan (built elsewhere: no TensorRT
here, so a stand-in file with a real sidecar) becomes `model.plan` with the contract of the graph its
sidecar names, `--kind` places the instances, and a wrong file for the backend is refused."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from segdeploy.cli import app
from segdeploy.contract import GraphLayout, MaskOutput
from segdeploy.forms import Precision, Target
from segdeploy.registry import get_family
from segdeploy.tensorrt.sidecar import Sidecar, sidecar_path
from segdeploy.tensorrt.profiles import EngineProfile
from segdeploy.weights import file_sha256

runner = CliRunner()


def _config(path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())  # strict: unknown fields raise


@pytest.fixture
def plan(export_graph, tmp_path):
    """A stand-in plan of the TensorRT-form fp16 graph, with the sidecar build-engine writes."""
    graph = export_graph(target=Target.TENSORRT, precision=Precision.FP16).path
    plan = tmp_path / "decoder.plan"
    plan.write_bytes(b"serialized engine bytes (a stand-in: TensorRT builds the real one on a GPU)")
    sidecar = Sidecar(
        segdeploy_version="0.1.0", tensorrt_version="10.14.1", gpu_name="NVIDIA H200", compute_capability="9.0", cuda_version="12.8",
        precision="fp16", typing="strong", profiles=[EngineProfile().to_dict()], io=[], onnx_path=str(graph),
        onnx_sha256=file_sha256(graph), onnx_opset=17, build_flags={},
    )
    sidecar_path(plan).write_text(sidecar.to_json())
    return plan


def test_tensorrt_backend_takes_the_plan_with_its_graphs_contract(plan, tmp_path):
    """Faults: a config without the shape-tensor flag, another contract, or the plan's bytes not copied."""
    out = tmp_path / "repo"
    result = runner.invoke(app, ["triton-repo", str(plan), "--out", str(out), "--backend", "tensorrt", "--kind", "KIND_GPU", "--instances", "2"])
    assert result.exit_code == 0, result.output
    config = _config(out / "sam_decoder" / "config.pbtxt")
    assert config.backend == "tensorrt" and config.max_batch_size == 0
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU and config.instance_group[0].count == 2
    layout = GraphLayout(MaskOutput.MULTI, family=get_family("sam1"))
    assert [i.name for i in config.input] == [s.name for s in layout.inputs()]
    assert [o.name for o in config.output] == [s.name for s in layout.outputs()]
    assert [i.name for i in config.input if i.is_shape_tensor] == ["orig_im_size"]  # TensorRT reads it as a shape
    assert (out / "sam_decoder" / "1" / "model.plan").read_bytes() == plan.read_bytes()


@pytest.mark.parametrize("backend", ["python", "onnxruntime"])
def test_kind_places_the_instances(exported, backend, tmp_path):
    """Fault: --kind ignored (KIND_CPU written whatever was asked)."""
    for kind in ("KIND_GPU", "KIND_CPU"):
        out = tmp_path / f"{backend}-{kind}"
        result = runner.invoke(app, ["triton-repo", str(exported.path), "--out", str(out), "--backend", backend, "--kind", kind])
        assert result.exit_code == 0, result.output
        group = _config(out / "sam_decoder" / "config.pbtxt").instance_group[0]
        assert group.kind == getattr(group, kind)


def test_wrong_kind_and_wrong_file_are_refused(exported, plan, tmp_path):
    for args, fragment in (
        ([str(exported.path), "--kind", "GPU"], "--kind takes KIND_CPU or KIND_GPU"),
        ([str(plan), "--backend", "onnxruntime"], "--backend onnxruntime takes a .onnx file"),
        ([str(exported.path), "--backend", "tensorrt"], "--backend tensorrt takes a .plan file"),
    ):
        result = runner.invoke(app, ["triton-repo", *args, "--out", str(tmp_path / "r")])
        assert result.exit_code == 2 and fragment in result.stderr and "\n" not in result.stderr.strip(), result.output
    assert not (tmp_path / "r").exists()
