"""AOTInductor packages on the CPU: `build-engine --runtime aoti`, verify and bench through the
package, the sidecar checks that refuse a package, and the C++ example against the Python runner.

One package per family is compiled per session, at small ranges, and the C++ example built once, by
a background process while the other tests run (tests/background_builds.py); a missing cmake or C++
compiler fails these tests with the install step (`make check-tools`), it does not skip them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segdeploy import contract
from segdeploy.cli import app
from segdeploy.errors import BadInputError
from segdeploy.registry import get_family

SAM1 = get_family("sam1")

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def copy_package(package: Path, folder: Path, **sidecar_changes) -> Path:
    """A copy of the package and its sidecar, with sidecar fields changed."""
    copy = folder / package.name
    shutil.copy(package, copy)
    info = json.loads(package.with_suffix(".json").read_text())
    copy.with_suffix(".json").write_text(json.dumps({**info, **sidecar_changes}))
    return copy


def test_sidecar_records_what_the_package_is(package, exported):
    from segdeploy.weights import file_sha256

    info = json.loads(package.with_suffix(".json").read_text())
    import torch

    assert info["torch_version"] == torch.__version__ and info["device"] == "cpu" and info["precision"] == "fp32"
    assert info["ranges"] == {"prompts": {"min": 1, "opt": 4, "max": 16}, "points": {"min": 1, "opt": 4, "max": 16}}  # conftest.AOTI_RANGES
    assert (info["attention"], info["upscale"], info["mask_output"], info["postprocess"], info["multi_image"]) == ("fewtoken", "matmul", "multi", True, False)
    assert info["onnx_sha256"] == file_sha256(exported.path) and info["package_sha256"] == file_sha256(package)
    assert info["weights"] == "random" and info["random_seed"] == "0"


def test_verify_engine_passes_on_the_package(package, tmp_path, fresh_seed):
    """The whole matrix, less the rows the package was not built for (listed, not failed)."""
    from segdeploy.families.sam1.cases import SAM1_MATRIX as MATRIX

    report = tmp_path / "verify.json"
    result = runner.invoke(app, ["verify", "--engine", str(package), "--seed", str(fresh_seed), "--report", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["candidate"] == "aoti" and data["passed"]
    too_big = [spec.name for spec in MATRIX if spec.prompts > 16]  # conftest.AOTI_RANGES: prompts 1..16
    assert too_big and [s.split(":")[0] for s in data["skipped"]] == too_big
    assert all("outside the package's compiled ranges" in s for s in data["skipped"])
    assert len(data["cases"]) == len(MATRIX) - len(too_big) and f"({len(too_big)} skipped: outside" in result.output
    assert data["cases"][5]["ragged"]["passed"]  # row 6 (7 ragged mixed prompts) ran batched-vs-alone too
    worst = max(o["max_abs"] for case in data["cases"] for o in case["outputs"] if o["name"] == "low_res_masks")
    assert worst < 1e-3


def graph_claiming_seed_1(exported, folder: Path) -> Path:
    """The exported graph with metadata saying its random weights have seed 1."""
    import onnx

    from segdeploy.graph_io import read_metadata, set_metadata

    model = onnx.load(str(exported.path))
    set_metadata(model, {**read_metadata(model), "random_seed": "1"})
    graph = folder / "seed1.onnx"
    onnx.save(model, str(graph))
    return graph


def test_verify_fails_when_the_package_holds_other_weights(package, exported, tmp_path):
    """Fault injection: the graph's metadata says seed 1, so the eager reference has other weights."""
    from segdeploy.weights import file_sha256

    graph = graph_claiming_seed_1(exported, tmp_path)
    copy = copy_package(package, tmp_path, onnx_path=str(graph), onnx_sha256=file_sha256(graph))
    result = runner.invoke(app, ["verify", "--engine", str(copy), "--cases", "1"])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output


@pytest.mark.parametrize("changes,message", [
    ({"torch_version": "2.0.0"}, "built with torch 2.0.0, this machine has torch"),
    ({"device": "cuda", "compute_capability": "9.0"}, "built for CUDA"),
    ({"cpu_capability": "NO_AVX"}, "compiled for"),
    ({"package_sha256": "0" * 64}, "rebuilt or replaced since"),
])
def test_a_foreign_package_is_refused_before_loading(package, tmp_path, changes, message):
    copy = copy_package(package, tmp_path, **changes)
    result = runner.invoke(app, ["verify", "--engine", str(copy), "--cases", "1"])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and f"refusing {copy}" in result.output and message in result.output


def test_verify_refuses_a_package_built_from_another_graph(package, exported, tmp_path):
    other = graph_claiming_seed_1(exported, tmp_path)
    result = runner.invoke(app, ["verify", "--engine", str(package), "--onnx", str(other)])
    assert result.exit_code == 2 and "was built from" in result.output


def test_calls_outside_the_compiled_ranges_are_refused(package, rng):
    from segdeploy.families.sam1.cases import SAM1_MATRIX as MATRIX
    from segdeploy.families.sam1.cases import draw_case
    from segdeploy.runners.aoti_runner import AotiRunner

    case = draw_case(MATRIX[-1], rng)  # 32 prompts; the package takes 1..16
    with AotiRunner.from_package(package) as aoti, pytest.raises(BadInputError, match="outside the package's compiled ranges"):
        aoti.infer(case.feeds)


def test_bench_lists_aoti_beside_onnxruntime(package, exported, tmp_path):
    args = ["bench", "--onnx", str(exported.path), "--backend", "onnxruntime", "--backend", "aoti", "--engine", str(package),
            "--prompts", "2", "--points", "3", "--runs", "1", "--warmup", "0", "--orig-size", "64x64", "--out-dir", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(next(tmp_path.glob("*.json")).read_text())["rows"]
    assert {row["backend"] for row in rows} == {"onnxruntime", "aoti"}


@pytest.mark.parametrize("fixture,case,outputs,masks_shape", [
    ("package", 5, ["masks", "iou_predictions", "low_res_masks"], (7, 3, 480, 640)),
    # the same program runs a SAM 2 package: its inputs by name (three per-image maps), four outputs
    ("sam2_package", 4, ["masks", "iou_predictions", "low_res_masks", "object_score_logits"], (7, 4, 480, 640)),
])
def test_cpp_example_equals_the_python_runner(fixture, case, outputs, masks_shape, cpp_example, tmp_path, request):
    """The C++ example's outputs (written by libtorch's AOTIModelPackageLoader) equal the Python
    runner's on a ragged batch of 7 mixed prompts at 480x640, through the example's own scripts."""
    from segdeploy.aoti.tensorfile import read_tensors
    from segdeploy.runners.aoti_runner import AotiRunner

    package = request.getfixturevalue(fixture)
    script = ROOT / "examples/cpp/prompts.py"
    inputs, output_file = tmp_path / "prompts.bin", tmp_path / "outputs.bin"
    subprocess.run([sys.executable, str(script), "write", str(package), str(inputs), "--case", str(case), "--seed", "3"], check=True, capture_output=True)
    ran = subprocess.run([str(cpp_example), str(package), str(inputs), str(output_file)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    got = read_tensors(output_file)
    with AotiRunner.from_package(package) as aoti:
        expected = aoti.infer(read_tensors(inputs))
    assert list(got) == outputs
    assert got["masks"].shape == masks_shape
    for name, value in expected.items():
        assert got[name].shape == value.shape and np.abs(got[name] - value).max() <= 1e-4, name
    checked = subprocess.run([sys.executable, str(script), "check", str(package), str(inputs), str(output_file)], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.count(" ok") == len(outputs), checked.stdout + checked.stderr


def test_cpp_example_says_what_is_wrong(package, cpp_example, tmp_path):
    from segdeploy.aoti.tensorfile import write_tensors

    inputs = tmp_path / "partial.bin"
    write_tensors(inputs, {contract.POINT_COORDS.name: np.zeros((1, 2, 2), np.float32)})
    ran = subprocess.run([str(cpp_example), str(package), str(inputs), str(tmp_path / "out.bin")], capture_output=True, text=True)
    assert ran.returncode == 2 and ran.stderr.strip() == "error: the inputs file has no tensor named image_embeddings"


def test_tensor_file_round_trip_and_damage(tmp_path, rng):
    from segdeploy.aoti.tensorfile import read_tensors, write_tensors

    tensors = {"a": rng.standard_normal((2, 3)).astype(np.float32), "size": np.array([480, 640], np.int64), "empty": np.zeros((0, 4), np.float32)}
    path = tmp_path / "t.bin"
    write_tensors(path, tensors)
    back = read_tensors(path)
    assert list(back) == list(tensors) and all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in tensors.items())
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(BadInputError, match="damaged"):
        read_tensors(path)
    with pytest.raises(BadInputError, match="float32 and int64"):
        write_tensors(path, {"h": np.zeros(2, np.float16)})


@pytest.mark.parametrize("args,message", [
    (["--fp16"], "fp16 packages are for --device cuda"),
    (["--device", "tpu"], "--device takes cpu or cuda"),
    (["--print-trtexec"], "--print-trtexec is for the TensorRT runtime"),
    (["--out", "engines/x.plan"], "a .pt2 file"),
    (["--prompts", "4:2:8"], "MIN <= OPT <= MAX"),
])
def test_build_aoti_refuses_bad_options_in_one_line(exported, args, message):
    result = runner.invoke(app, ["build-engine", "--runtime", "aoti", "--onnx", str(exported.path), *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_build_aoti_without_a_compiler_or_cuda_is_one_line(exported, tmp_path):
    import torch
    from torch._inductor import config

    with config.patch({"cpp.cxx": ("/nonexistent/c++",)}):
        result = runner.invoke(app, ["build-engine", "--runtime", "aoti", "--onnx", str(exported.path), "--out", str(tmp_path / "x.pt2")])
    assert result.exit_code == 2 and "needs a C++ compiler" in result.output and len(result.output.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["build-engine", "--runtime", "aoti", "--device", "cuda", "--onnx", str(exported.path), "--out", str(tmp_path / "x.pt2")])
        assert result.exit_code == 2 and "--device cuda needs an NVIDIA GPU" in result.output
    assert not (tmp_path / "x.pt2").exists()


def test_multi_image_graph_exports_with_a_dynamic_image_count(exported_multi, tmp_path, rng):
    """The multi-image flavor traced for a package (without the minute of compiling): the image count
    is a dim with the --images range, and the traced program equals the eager model on a drawn case."""
    from segdeploy.aoti.builder import export_program, plan_package
    from segdeploy.families.sam1.cases import SAM1_MULTI_IMAGE_MATRIX as MULTI_IMAGE_MATRIX
    from segdeploy.families.sam1.cases import draw_case
    from segdeploy.runners.torch_runner import TorchRunner
    from segdeploy.tensorrt.profiles import Range
    from segdeploy.families.sam1.weights import load_decoder

    options = plan_package(exported_multi.path, tmp_path / "m.pt2", prompts=Range(1, 4, 32), points=Range(1, 3, 16), images=Range(1, 2, 8))
    program, layout, form, _ = export_program(options)
    assert layout.multi_image and [s.name for s in layout.inputs()][:2] == ["image_embeddings", "image_index"]
    bounds = {(int(r.lower), int(r.upper)) for r in program.range_constraints.values()}
    assert {(1, 8), (1, 32), (1, 16)} <= bounds
    case = draw_case(MULTI_IMAGE_MATRIX[2], rng, postprocess=False, multi_image=True)  # 3 images, 7 ragged prompts
    import torch

    with torch.no_grad():
        traced = program.module()(*(torch.from_numpy(case.feeds[s.name]) for s in layout.inputs()))
    with TorchRunner(load_decoder(seed=0)[0], SAM1.layout(layout.mask_output, False, True), form=form) as eager:
        expected = eager.infer(case.feeds)
    for name, value in zip(layout.output_names(), traced):
        assert np.abs(value.numpy() - expected[name]).max() < 1e-4, name


def test_build_aoti_needs_the_checkpoint_a_graph_came_from(exported, tmp_path):
    import onnx

    from segdeploy.graph_io import read_metadata, set_metadata

    model = onnx.load(str(exported.path))
    set_metadata(model, {**read_metadata(model), "weights": "checkpoint", "weights_sha256": "ab" * 32, "random_seed": ""})
    graph = tmp_path / "from_checkpoint.onnx"
    onnx.save(model, str(graph))
    args = ["build-engine", "--runtime", "aoti", "--onnx", str(graph), "--out", str(tmp_path / "x.pt2")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "pass it with --checkpoint" in result.output
    wrong = tmp_path / "other.pth"
    wrong.write_bytes(b"not the checkpoint")
    result = runner.invoke(app, [*args, "--checkpoint", str(wrong)])
    assert result.exit_code == 2 and "is not the checkpoint" in result.output
    assert not (tmp_path / "x.pt2").exists()


# --- SAM 2 packages (sam2_package: conftest, sam2_all compiled once per session) ---


def test_sam2_package_records_its_family_and_passes_verify(sam2_package, sam2_all, tmp_path, fresh_seed):
    from segdeploy.aoti.sidecar import read_sidecar

    sidecar = read_sidecar(sam2_package)
    assert sidecar.family == "sam2" and sidecar.variant == "sam2.1_hiera_tiny" and sidecar.layout.family.name == "sam2"
    names = [io["name"] for io in sidecar.io]
    assert names[:3] == ["image_embeddings", "high_res_feats_0", "high_res_feats_1"] and names[-1] == "object_score_logits"
    report = tmp_path / "verify.json"
    result = runner.invoke(app, ["verify", "--engine", str(sam2_package), "--cases", "5", "--seed", str(fresh_seed), "--report", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["candidate"] == "aoti" and data["passed"] and len(data["cases"]) == 5
    assert {o["name"] for o in data["cases"][0]["outputs"]} >= {"masks", "object_score_logits"}
    assert data["cases"][4]["ragged"]["passed"]  # 7 ragged mixed prompts, batched against alone


def test_sam2_package_with_an_unknown_family_is_refused(sam2_package, tmp_path):
    copy = copy_package(sam2_package, tmp_path, family="sam3")
    result = runner.invoke(app, ["verify", "--engine", str(copy), "--cases", "1"])
    assert result.exit_code == 2 and "'sam3'" in result.output and len(result.output.strip().splitlines()) == 1


def test_sam2_program_equals_eager_and_leaves_eager_working(sam2_exported, tmp_path, rng):
    """torch.export of the SAM 2 matmul form (the package's first step) equals the eager graph, and
    eager still runs after it: a tensor cached during the trace would be a fake one (a bug once)."""
    import torch

    from segdeploy.aoti.builder import export_program, plan_package
    from segdeploy.registry import get_family
    from segdeploy.families.sam2.model import _block_order_rows
    from segdeploy.runners.torch_runner import TorchRunner
    from segdeploy.tensorrt.profiles import Range

    _block_order_rows.cache_clear()  # the trace is the first to ask for them
    options = plan_package(sam2_exported.path, tmp_path / "s.pt2", prompts=Range(1, 4, 16), points=Range(1, 3, 16))
    program, layout, form, _ = export_program(options)
    family = get_family("sam2")
    case = family.draw_cases(rng, 5, layout)[-1]  # 7 ragged mixed prompts at 480x640
    with torch.no_grad():
        traced = program.module()(*(torch.from_numpy(case.feeds[s.name]) for s in layout.inputs()))
    with TorchRunner(family.load_decoder("sam2.1_hiera_tiny", None, 0)[0], family.layout(layout.mask_output, True), form=form) as eager:
        expected = eager.infer(case.feeds)
    for name, value in zip(layout.output_names(), traced):
        limit = 1e-3 if name == "masks" else 1e-4  # separable resize: the same function, other rounding
        assert np.abs(value.numpy() - expected[name]).max() < limit, name


def test_triton_repo_carries_a_package_and_its_sidecar(sam2_package, tmp_path, rng):
    """triton-repo --backend python on a .pt2: the package and its sidecar go into the repository,
    and the copy loads there (Decoder.load checks it against the sidecar) with the same results."""
    from segdeploy import Decoder
    from segdeploy.aoti.sidecar import read_sidecar
    from segdeploy.registry import get_family

    result = runner.invoke(app, ["triton-repo", str(sam2_package), "--backend", "python", "--out", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    copy = tmp_path / "repo/sam_decoder/1" / sam2_package.name
    assert copy.is_file() and copy.with_suffix(".json").is_file()
    case = get_family("sam2").draw_cases(rng, 1, read_sidecar(sam2_package).layout)[0]
    with Decoder.load(sam2_package) as original, Decoder.load(copy) as copied:
        want, got = original.runner.infer(case.feeds), copied.runner.infer(case.feeds)
    assert all(np.array_equal(got[name], want[name]) for name in want)


@pytest.mark.parametrize("tensors, repeats, message", [
    ({"orig_im_size": np.array([30000, 30000], np.int64)}, None, "orig_im_size 30000x30000"),
    ({"orig_im_size": np.array([2**40, 2**40], np.int64)}, None, "orig_im_size"),
    ({"point_coords": np.zeros((1, 65, 2), np.float32)}, None, "64 point slots"),
    ({"orig_im_size": np.array([64, 64], np.int64)}, "-3", "REPEATS"),
])
def test_cpp_example_refuses_requests_past_the_limits(cpp_example, tmp_path, tensors, repeats, message):
    """The C++ example checks segdeploy.limits' bounds before it loads the package (exit 2, one line).
    Fault: without check_bounds in main.cpp the bad package path fails instead, with exit 1."""
    from segdeploy.aoti.tensorfile import write_tensors

    write_tensors(tmp_path / "in.bin", tensors)
    args = [str(cpp_example), str(tmp_path / "no-such-package.pt2"), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")]
    done = subprocess.run(args + ([repeats] if repeats else []), capture_output=True, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
