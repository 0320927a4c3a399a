"""Everything up to the TensorRT boundary, on the CPU: profiles, trtexec lines, precision paths,
sidecar checks, inspector verdicts and the missing-TensorRT path."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segdeploy.cli import app
from segdeploy.contract import MaskOutput
from segdeploy.errors import BadInputError
from segdeploy.forms import Precision, Target
from segdeploy.tensorrt.builder import plan_options, precision_plan
from segdeploy.tensorrt.environment import TrtEnvironment
from segdeploy.tensorrt.inspect_engine import LayerInfo, fusion_verdicts, parse_layers
from segdeploy.tensorrt.profiles import (
    EngineProfile,
    Range,
    SizeRange,
    parse_range,
    parse_size_range,
)
from segdeploy.tensorrt.sidecar import Sidecar, check_in_profile, compatibility_problems
from segdeploy.tensorrt.trtexec import BuildOptions, trtexec_command
from segdeploy.registry import get_family

SAM1 = get_family("sam1")

runner = CliRunner()


@pytest.mark.parametrize("text,expected", [("1:16:64", Range(1, 16, 64)), ("8", Range(8, 8, 8)), ("2:2:3", Range(2, 2, 3))])
def test_parse_range(text, expected):
    assert parse_range(text, "--prompts") == expected


@pytest.mark.parametrize("text,message", [
    ("8:4:16", "MIN <= OPT <= MAX"), ("0:1:2", "positive"), ("a:b:c", "integers"), ("1:2", "MIN:OPT:MAX"),
])
def test_parse_range_errors(text, message):
    with pytest.raises(BadInputError, match=message):
        parse_range(text, "--prompts")


def test_parse_size_range():
    assert parse_size_range("16:720x1280:4096") == SizeRange((16, 16), (720, 1280), (4096, 4096))
    with pytest.raises(BadInputError, match="height and width"):
        parse_size_range("16:2000x10:1024")
    with pytest.raises(BadInputError, match="positive"):
        parse_size_range("0:1:2")


def test_profile_shapes_follow_the_contract():
    shapes = EngineProfile(Range(1, 4, 8), Range(2, 3, 9), SizeRange((10, 20), (30, 40), (50, 60))).shapes(SAM1.layout())
    assert shapes["point_coords"] == ((1, 2, 2), (4, 3, 2), (8, 9, 2))
    assert shapes["point_labels"] == ((1, 2), (4, 3), (8, 9))
    assert shapes["mask_input"] == ((1, 1, 256, 256), (4, 1, 256, 256), (8, 1, 256, 256))
    assert shapes["has_mask_input"] == ((1,), (4,), (8,))
    assert shapes["image_embeddings"] == ((1, 256, 64, 64),) * 3
    assert shapes["orig_im_size"] == ((10, 20), (30, 40), (50, 60))  # values of the shape tensor
    assert "orig_im_size" not in EngineProfile().shapes(SAM1.layout(postprocess=False))


def test_trtexec_strongly_typed_line():
    options = BuildOptions(
        onnx=Path("export/g.onnx"), out=Path("engines/g.plan"), layout=SAM1.layout(),
        profile=EngineProfile(Range(1, 2, 4), Range(1, 3, 5), SizeRange((16, 16), (1024, 1024), (2048, 2048))),
        precision=Precision.FP16, strongly_typed=True, timing_cache=Path("engines/cache.bin"), opt_level=5,
        hardware_compat="ampere+", version_compatible=True, workspace_mib=2048,
    )
    assert trtexec_command(options) == (
        "trtexec --onnx=export/g.onnx --saveEngine=engines/g.plan "
        "--minShapes=image_embeddings:1x256x64x64,point_coords:1x1x2,point_labels:1x1,mask_input:1x1x256x256,has_mask_input:1,orig_im_size:16x16 "
        "--optShapes=image_embeddings:1x256x64x64,point_coords:2x3x2,point_labels:2x3,mask_input:2x1x256x256,has_mask_input:2,orig_im_size:1024x1024 "
        "--maxShapes=image_embeddings:1x256x64x64,point_coords:4x5x2,point_labels:4x5,mask_input:4x1x256x256,has_mask_input:4,orig_im_size:2048x2048 "
        "--stronglyTyped --timingCacheFile=engines/cache.bin --builderOptimizationLevel=5 "
        "--hardwareCompatibilityLevel=ampere+ --versionCompatible --memPoolSize=workspace:2048M "
        "--profilingVerbosity=detailed --skipInference"
    )


def test_trtexec_weakly_typed_fp16_pins_layers_and_fp32_without_tf32():
    weak = BuildOptions(onnx=Path("g.onnx"), out=Path("g.plan"), layout=SAM1.layout(), precision=Precision.FP16, fp32_layers=("/a/LayerNorm", "/b/Softmax"))
    line = trtexec_command(weak)
    assert " --fp16 --precisionConstraints=obey --layerPrecisions=/a/LayerNorm:fp32,/b/Softmax:fp32 " in line
    assert "--stronglyTyped" not in line
    fp32 = trtexec_command(BuildOptions(onnx=Path("g.onnx"), out=Path("g.plan"), layout=SAM1.layout(), precision=Precision.FP32, tf32=False, hardware_compat="same-cc"))
    assert "--noTF32" in fp32 and "--fp16" not in fp32 and "--hardwareCompatibilityLevel=sameComputeCapability" in fp32


@pytest.mark.parametrize("graph,requested,major,weak,expected", [
    ("fp16", None, 10, False, (Precision.FP16, True)),
    ("fp16", None, 11, False, (Precision.FP16, True)),
    ("bf16", Precision.BF16, 11, False, (Precision.BF16, True)),
    ("fp32", Precision.FP16, 10, True, (Precision.FP16, False)),
    ("fp32", None, 10, False, (Precision.FP32, False)),
    ("fp32", None, 11, False, (Precision.FP32, True)),
])
def test_precision_paths(graph, requested, major, weak, expected):
    plan = precision_plan(graph, requested, major, weak)
    assert (plan.precision, plan.strongly_typed) == expected and plan.reexport is None


@pytest.mark.parametrize("graph,requested,major,weak,reexport,message", [
    ("fp32", Precision.FP16, 10, False, Precision.FP16, "--weak-typing asks for it"),
    ("fp32", Precision.BF16, 10, False, Precision.BF16, "weakly typed"),
    ("fp32", Precision.FP16, 11, True, Precision.FP16, "strongly typed networks only"),
    ("fp16", Precision.BF16, 10, False, Precision.BF16, "typed fp16"),
])
def test_precision_paths_that_need_a_typed_export(graph, requested, major, weak, reexport, message):
    plan = precision_plan(graph, requested, major, weak)
    assert plan.reexport is reexport and message in plan.reason


def test_plan_options_pin_fp32_layers_for_weak_fp16(exported):
    options = plan_options(exported.path, None, Precision.FP16, "10.14", weak_typing=True, allow_lint_errors=True)
    assert not options.strongly_typed and options.fp32_layers and options.lint_errors
    assert all("LayerNorm" in n or "Softmax" in n or "Reduce" in n for n in options.fp32_layers)
    assert options.out == Path("engines") / f"{exported.path.stem}_fp16.plan"


def _backticked(line: str) -> list[list[str]]:
    return [shlex.split(command) for command in re.findall(r"`([^`]+)`", line)]


def test_design_card_flow_stops_with_the_exact_commands_and_they_work(exported, tmp_path, monkeypatch):
    """`segdeploy export --opset 17` then `build-engine --fp16`: exit 2, one line with the export
    and build commands; following them gives a strongly typed fp16 build of the TensorRT form."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "export").mkdir()
    shutil.copy(exported.path, tmp_path / "export" / "sam_vit_b_multi_onnxruntime_opset17.onnx")
    result = runner.invoke(app, ["build-engine", "--fp16", "--print-trtexec"])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "trtexec" not in result.output
    export_cmd, build_cmd = _backticked(result.output)
    assert export_cmd == ["segdeploy", "export", "--target", "tensorrt", "--precision", "fp16", "--opset", "17"]
    assert build_cmd == ["segdeploy", "build-engine", "--onnx", "export/sam_vit_b_multi_fp16_tensorrt_opset17.onnx", "--fp16"]

    exported_again = runner.invoke(app, export_cmd[1:])
    assert exported_again.exit_code == 0, exported_again.output
    built = runner.invoke(app, [*build_cmd[1:], "--print-trtexec"])
    assert built.exit_code == 0, built.output
    line = built.output.strip()
    assert line.startswith("trtexec --onnx=export/sam_vit_b_multi_fp16_tensorrt_opset17.onnx ")
    assert "--stronglyTyped" in line and "--fp16" not in line and "warning" not in line


def test_fp32_tensorrt_form_at_fp16_needs_a_typed_export_or_weak_typing(tmp_path, monkeypatch):
    from segdeploy.export import ExportOptions, export_onnx

    graph = export_onnx(ExportOptions(target=Target.TENSORRT, out=tmp_path / "t.onnx", mask_output=MaskOutput.SINGLE, postprocess=False)).path
    result = runner.invoke(app, ["build-engine", "--onnx", str(graph), "--fp16", "--print-trtexec"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    export_cmd, _ = _backticked(result.output)
    assert export_cmd == ["segdeploy", "export", "--target", "tensorrt", "--precision", "fp16", "--opset", "17", "--mask-output", "single", "--no-postprocess"]
    result = runner.invoke(app, ["build-engine", "--onnx", str(graph), "--fp16", "--print-trtexec", "--trt-version", "11.0"])
    assert result.exit_code == 2 and "strongly typed networks only" in result.output
    weak = runner.invoke(app, ["build-engine", "--onnx", str(graph), "--fp16", "--weak-typing", "--print-trtexec", "--trt-version", "10.14"])
    assert weak.exit_code == 0, weak.output
    assert " --fp16 --precisionConstraints=obey " in weak.output and "--stronglyTyped" not in weak.output
    fp32 = runner.invoke(app, ["build-engine", "--onnx", str(graph), "--print-trtexec", "--trt-version", "10.14"])
    assert fp32.exit_code == 0 and "--fp16" not in fp32.output and "--stronglyTyped" not in fp32.output


def test_lint_errors_refuse_the_build_unless_allowed(exported, tmp_path):
    import onnx

    from segdeploy.graph_io import read_metadata, set_metadata

    model = onnx.load(str(exported.path))  # the few-token form, labelled as the TensorRT form
    set_metadata(model, {**read_metadata(model), "target": "tensorrt"})
    graph = tmp_path / "mislabelled.onnx"
    onnx.save(model, str(graph))
    from segdeploy.tensorrt.builder import lint_errors
    from segdeploy.tensorrt.lint import DEFAULT_TRT_VERSION

    errors = lint_errors(graph, DEFAULT_TRT_VERSION)
    assert any("attention-pattern" in e for e in errors) and any("unsupported-op" in e for e in errors)  # few-token attention, contrib ops
    for path in (exported.path, graph):
        refused = runner.invoke(app, ["build-engine", "--onnx", str(path), "--print-trtexec"])
        assert refused.exit_code == 2 and f"{len(errors)} TensorRT lint error(s)" in refused.output and "trtexec --onnx" not in refused.output
    assert "--allow-lint-errors" in refused.output and f"segdeploy lint {graph}" in refused.output
    allowed = runner.invoke(app, ["build-engine", "--onnx", str(graph), "--print-trtexec", "--allow-lint-errors"])
    assert allowed.exit_code == 0, allowed.output
    assert f"warning: building despite {len(errors)} TensorRT lint error(s)" in allowed.output
    assert allowed.output.strip().splitlines()[-1].startswith(f"trtexec --onnx={graph} ")


def sidecar(**changes) -> Sidecar:
    base = dict(
        segdeploy_version="0.1.0", tensorrt_version="10.14.1", gpu_name="NVIDIA H200", compute_capability="9.0",
        cuda_version="12.8", precision="fp16", typing="strong", profiles=[EngineProfile().to_dict()], io=[],
        onnx_path="g.onnx", onnx_sha256="0" * 64, onnx_opset=17, build_flags={},
    )
    return Sidecar(**{**base, **changes})


H200 = TrtEnvironment("10.14.1", "NVIDIA H200", "9.0", "12.8")


def test_sidecar_compatibility():
    assert compatibility_problems(sidecar(), H200) == []
    assert "TensorRT 10.14.1" in compatibility_problems(sidecar(), TrtEnvironment("10.13.0", "NVIDIA H200", "9.0", "12.8"))[0]
    assert compatibility_problems(sidecar(version_compatible=True), TrtEnvironment("10.15.0", "NVIDIA H200", "9.0", "12.8")) == []
    assert compatibility_problems(sidecar(version_compatible=True), TrtEnvironment("11.0.0", "NVIDIA H200", "9.0", "12.8"))
    a100 = TrtEnvironment("10.14.1", "NVIDIA A100", "8.0", "12.8")
    assert "built on NVIDIA H200" in compatibility_problems(sidecar(), a100)[0]
    assert compatibility_problems(sidecar(hardware_compat="ampere+"), a100) == []
    assert compatibility_problems(sidecar(hardware_compat="ampere+"), TrtEnvironment("10.14.1", "Tesla T4", "7.5", "12.8"))
    assert compatibility_problems(sidecar(hardware_compat="same-cc"), TrtEnvironment("10.14.1", "NVIDIA H100", "9.0", "12.8")) == []
    assert compatibility_problems(sidecar(hardware_compat="same-cc"), a100)


def test_inputs_outside_the_profile_are_refused():
    info = sidecar()
    check_in_profile(info, 64, 16, (4096, 16))
    with pytest.raises(BadInputError, match="outside the engine's profile"):
        check_in_profile(info, 65, 2, (1024, 1024))
    with pytest.raises(BadInputError, match="rebuild with wider"):
        check_in_profile(info, 2, 2, (8000, 1024))


def test_missing_tensorrt_is_exit_2_with_what_to_do(exported, tmp_path):
    # --allow-lint-errors: the onnxruntime form is otherwise refused (with its re-export line) before TensorRT is looked for
    result = runner.invoke(app, ["build-engine", "--onnx", str(exported.path), "--out", str(tmp_path / "g.plan"), "--allow-lint-errors"])
    assert result.exit_code == 2
    assert "segdeploy[tensorrt]" in result.output and "GPU" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_verify_and_bench_with_an_engine_need_tensorrt_too(exported, tmp_path):
    from segdeploy.weights import file_sha256

    plan = tmp_path / "g.plan"
    plan.write_bytes(b"not really a plan")
    info = sidecar(onnx_path=str(exported.path), onnx_sha256=file_sha256(exported.path))
    plan.with_suffix(".json").write_text(info.to_json())
    result = runner.invoke(app, ["verify", "--engine", str(plan), "--cases", "1"])
    assert result.exit_code == 2 and "not installed" in result.output
    result = runner.invoke(app, ["bench", "--onnx", str(exported.path), "--backend", "tensorrt", "--engine", str(plan), "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "not installed" in result.output


def test_verify_refuses_an_engine_built_from_another_graph(exported, tmp_path):
    plan = tmp_path / "g.plan"
    plan.write_bytes(b"x")
    plan.with_suffix(".json").write_text(sidecar(onnx_path="other.onnx").to_json())
    result = runner.invoke(app, ["verify", "--engine", str(plan), "--onnx", str(exported.path)])
    assert result.exit_code == 2 and "was built from other.onnx" in result.output


@pytest.fixture(scope="module")
def trt_graph(tmp_path_factory):
    """A TensorRT-form fp16 graph: lint clean, so build-engine reads its options before anything else."""
    from segdeploy.export import ExportOptions, export_onnx

    return export_onnx(ExportOptions(target=Target.TENSORRT, precision=Precision.FP16, out=tmp_path_factory.mktemp("trt") / "t.onnx")).path


def test_print_trtexec_needs_no_tensorrt(trt_graph):
    result = runner.invoke(app, ["build-engine", "--onnx", str(trt_graph), "--prompts", "1:8:32", "--print-trtexec"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("trtexec --onnx=") and "--stronglyTyped" in result.output
    assert "point_coords:32x16x2" in result.output


@pytest.mark.parametrize("args,message", [
    (["--fp16", "--bf16"], "choose one"), (["--hardware-compat", "turing"], "--hardware-compat"),
    (["--prompts", "4:2:8"], "MIN <= OPT <= MAX"), (["--opt-level", "7"], "--opt-level"), (["--workspace", "0"], "--workspace"),
])
def test_build_engine_validates_before_building(trt_graph, args, message):
    """Each bad option is refused by name on a graph that is otherwise buildable (the same options
    with valid values print the trtexec line, so the refusal is the option's)."""
    result = runner.invoke(app, ["build-engine", "--onnx", str(trt_graph), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "lint" not in result.output


@pytest.mark.parametrize("args", [["--fp16"], ["--hardware-compat", "ampere+"], ["--prompts", "2:4:8"], ["--opt-level", "3"], ["--workspace", "512"]])
def test_build_engine_takes_the_valid_values(trt_graph, args):
    result = runner.invoke(app, ["build-engine", "--onnx", str(trt_graph), *args, "--print-trtexec"])
    assert result.exit_code == 0 and result.output.startswith("trtexec --onnx="), result.output


def test_fusion_verdicts_from_inspector_json():
    nodes = {
        "/t/layers.0/self_attn/MatMul": "MatMul", "/t/layers.0/self_attn/Softmax": "Softmax", "/t/layers.0/self_attn/MatMul_1": "MatMul",
        "/t/layers.0/cross_attn_token_to_image/MatMul": "MatMul", "/t/layers.0/cross_attn_token_to_image/Softmax": "Softmax",
        "/t/layers.0/cross_attn_token_to_image/MatMul_1": "MatMul",
        "/output_upscaling.1/LayerNormalization": "LayerNormalization", "/output_upscaling.2/Gelu": "Gelu",
    }
    inspector = json.dumps({"Layers": [
        {"Name": "_gemm_mha_v2_myl0", "LayerType": "kgen", "TacticName": "sm90_xmma_fmha_v2", "Metadata": "[ONNX Layer: /t/layers.0/self_attn/MatMul]"},
        {"Name": "/t/layers.0/cross_attn_token_to_image/MatMul", "LayerType": "MatrixMultiply", "TacticName": "sm90_gemm"},
        {"Name": "/t/layers.0/cross_attn_token_to_image/Softmax", "LayerType": "SoftMax", "TacticName": "softmax"},
        {"Name": "/output_upscaling.0/ConvTranspose + /output_upscaling.1/LayerNormalization + /output_upscaling.2/Gelu", "LayerType": "Myelin", "TacticName": ""},
    ]})
    verdicts = {v.block: v for v in fusion_verdicts(parse_layers(inspector), list(nodes), nodes)}
    assert verdicts["/t/layers.0/self_attn"].fused
    assert not verdicts["/t/layers.0/cross_attn_token_to_image"].fused
    assert verdicts["upscaling"].fused
    alone = [LayerInfo("/output_upscaling.2/Gelu", "Activation", "")]
    assert not {v.block: v for v in fusion_verdicts(alone, list(nodes), nodes)}["upscaling"].fused


def test_inspect_needs_tensorrt(tmp_path):
    plan = tmp_path / "g.plan"
    plan.write_bytes(b"x")
    plan.with_suffix(".json").write_text(sidecar().to_json())
    result = runner.invoke(app, ["inspect", str(plan)])
    assert result.exit_code == 2 and "not installed" in result.output


@pytest.mark.parametrize("export_args,expected", [
    (["--signature", "official", "--mask-output", "best"], ["--mask-output", "all"]),
    (["--variant", "sam2.1_hiera_tiny", "--multi-image"], ["--variant", "sam2.1_hiera_tiny", "--multi-image"]),
])
def test_reexport_command_keeps_signature_and_family(export_args, expected, tmp_path, monkeypatch):
    """The export command build-engine prints for a graph in the onnxruntime form keeps the variant
    (a SAM 2 one too) and flavor; for the official signature, whose float32 orig_im_size TensorRT
    cannot take, it gives segdeploy's signature with all four masks and says so. Running it works."""
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, ["export", *export_args, "--out", "graph.onnx"])
    assert first.exit_code == 0, first.output
    result = runner.invoke(app, ["build-engine", "--onnx", "graph.onnx", "--bf16", "--print-trtexec"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    export_cmd, build_cmd = _backticked(result.output)
    assert export_cmd[:7] == ["segdeploy", "export", "--target", "tensorrt", "--precision", "bf16", "--opset"]
    assert all(arg in export_cmd for arg in expected) and "--signature" not in export_cmd, export_cmd
    assert ("int64 shape input" in result.output) == ("official" in export_args)
    again = runner.invoke(app, export_cmd[1:])
    assert again.exit_code == 0, again.output
    built = runner.invoke(app, [*build_cmd[1:], "--print-trtexec"])
    assert built.exit_code == 0 and "--stronglyTyped" in built.output, built.output


def test_verify_skips_the_rows_a_plans_profiles_do_not_take(tmp_path, rng):
    """verify --engine on a plan: a matrix row outside every profile is listed with the profile's
    reason, a row inside is kept (the same check the runner makes before each call)."""
    from segdeploy.families.sam1.cases import SAM1_MATRIX as MATRIX
    from segdeploy.families.sam1.cases import draw_case
    from segdeploy.tensorrt.profiles import EngineProfile, Range
    from segdeploy.verify import engine_refusal

    plan = tmp_path / "g.plan"
    plan.write_bytes(b"not really a plan")
    narrow = EngineProfile(prompts=Range(1, 4, 8)).to_dict()
    plan.with_suffix(".json").write_text(sidecar(profiles=[narrow]).to_json())
    why_not = engine_refusal(plan)
    low, high = narrow["orig_size"]["min"], narrow["orig_size"]["max"]
    kept = 0
    for spec in MATRIX:
        feeds = draw_case(spec, rng).feeds
        prompts, points = feeds["point_coords"].shape[:2]
        fits = prompts <= 8 and narrow["points"]["min"] <= points <= narrow["points"]["max"]
        fits &= all(low[i] <= spec.orig_size[i] <= high[i] for i in (0, 1))
        reason = why_not(feeds)
        assert (reason == "") == fits, (spec.name, reason)
        assert fits or "outside the engine's profile" in reason
        kept += fits
    assert 0 < kept < len(MATRIX)
