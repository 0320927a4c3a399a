"""The CLI end to end through typer's CliRunner: exit codes, one-line errors, reports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from segdeploy.cli import app
from segdeploy.registry import get_family

SAM1 = get_family("sam1")

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_export_verify_info_roundtrip(tmp_path, fresh_seed):
    graph = tmp_path / "g.onnx"
    result = invoke("export", "--opset", "17", "--seed", "5", "--out", str(graph), "--report", str(tmp_path / "e.json"))
    assert result.exit_code == 0, result.output
    assert "random weights, seed 5" in result.output and graph.is_file()
    assert json.loads((tmp_path / "e.json").read_text())["opset"] == 17

    report = tmp_path / "v.json"
    result = invoke("verify", "--onnx", str(graph), "--cases", "2", "--seed", str(fresh_seed), "--report", str(report))
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["seed"] == fresh_seed and len(data["cases"]) == 2

    result = invoke("info", str(graph))
    assert result.exit_code == 0
    assert "random_seed        5" in result.output and "orig_im_size" in result.output
    assert json.loads(invoke("info", str(graph), "--json").output)["metadata"]["mask_output"] == "multi"


def test_verify_exits_1_on_a_fault(exported, tmp_path, rng):
    from test_verify import perturb_one_weight

    faulty = tmp_path / "faulty.onnx"
    perturb_one_weight(exported.path, faulty, rng)
    result = invoke("verify", "--onnx", str(faulty), "--cases", "2")
    assert result.exit_code == 1
    assert "FAIL" in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (("export", "--opset", "16"), "opset 16 is too old"),
        (("export", "--checkpoint", "/nonexistent/sam.pth"), "checkpoint not found"),
        (("verify", "--onnx", "/nonexistent/g.onnx"), "ONNX file not found"),
        (("info", "/nonexistent/g.onnx"), "ONNX file not found"),
        (("verify", "--onnx", "{graph}", "--cases", "0"), "Invalid value for '--cases'"),
        (("export", "--seed", "-5"), "Invalid value for '--seed'"),  # an option out of its typer range: one line too
    ],
)
def test_user_errors_are_one_line_with_exit_2(args, message, exported):
    result = invoke(*(a.format(graph=exported.path) for a in args))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_bad_option_value_is_exit_2():
    result = invoke("export", "--mask-output", "seven")
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Invalid value for '--mask-output'" in lines[0], result.output


def test_verify_default_finds_the_newest_export(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("verify")
    assert result.exit_code == 2 and "run `segdeploy export` first" in result.output


def test_python_dash_m_and_help():
    out = subprocess.run([sys.executable, "-m", "segdeploy", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("export", "verify", "info"):
        assert command in out
    assert "--mask-output" in invoke("export", "--help").output


def test_import_is_light():
    code = "import sys, segdeploy, segdeploy.cli, segdeploy.contract; print(any(m in sys.modules for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_runner_rejects_malformed_feeds(exported, rng):
    from segdeploy import contract
    from segdeploy.families.sam1.cases import SAM1_MATRIX as MATRIX
    from segdeploy.families.sam1.cases import draw_case
    from segdeploy.contract import MaskOutput
    from segdeploy.errors import BadInputError
    from segdeploy.runners.ort_runner import OrtRunner

    feeds = draw_case(MATRIX[2], rng).feeds
    names = [s.name for s in contract.output_specs(MaskOutput.MULTI, True)]
    with OrtRunner(exported.path, SAM1.layout().inputs(), names) as ort_runner:
        for change, message in [
            ({"point_labels": np.full_like(feeds["point_labels"], 4.0)}, "valid labels"),
            ({"orig_im_size": np.array([0, 10], np.int64)}, "positive"),
            ({"orig_im_size": np.array([10.0, 10.0], np.float32)}, "must be int64"),
            ({"has_mask_input": np.zeros(5, np.float32)}, "num_prompts"),
            ({"image_embeddings": np.zeros((2, 256, 64, 64), np.float32)}, "must have shape"),
        ]:
            with pytest.raises(BadInputError, match=message):
                ort_runner.infer({**feeds, **change})
        with pytest.raises(BadInputError, match="do not match"):
            ort_runner.infer({k: v for k, v in feeds.items() if k != "mask_input"})
