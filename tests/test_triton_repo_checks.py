"""triton-repo refuses, in one line with the command that works and exit 2, a repository the server
would refuse at load or at the first request."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from segdeploy.cli import app
from segdeploy.contract import MaskOutput, Signature
from segdeploy.export import ExportOptions, export_onnx

runner = CliRunner()


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "official.onnx"
    return export_onnx(ExportOptions(out=path, mask_output=MaskOutput.ALL, signature=Signature.OFFICIAL)).path


def _refused(args: list[str], *fragments: str) -> None:
    result = runner.invoke(app, ["triton-repo", *args])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in line, line


def test_official_signature_refused_for_the_python_backend(official, tmp_path):
    """Fault: without the layout.official check, the repository is written and exit is 0 (Decoder
    refuses the graph when Triton loads the model)."""
    _refused([str(official), "--out", str(tmp_path / "r")], "official export's signature", "--backend onnxruntime")
    assert runner.invoke(app, ["triton-repo", str(official), "--out", str(tmp_path / "o"), "--backend", "onnxruntime"]).exit_code == 0


def test_batch_size_instances_and_out(exported, tmp_path):
    """Faults: without each check, exit 0 (max-batch-size, instances) or a NotADirectoryError traceback (--out a file)."""
    graph = str(exported.path)
    _refused([graph, "--out", str(tmp_path / "a"), "--max-batch-size", "0"], "--max-batch-size 64")
    _refused([graph, "--out", str(tmp_path / "b"), "--instances", "0"], "--instances 1")
    _refused([graph, "--out", str(tmp_path / "c"), "--instances", "-3", "--backend", "onnxruntime"], "--instances 1")
    _refused([graph, "--out", str(tmp_path / "d"), "--max-queue-delay-us", "-1"], "--max-queue-delay-us")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    _refused([graph, "--out", str(a_file)], "is a file", "--out")
    assert not any((tmp_path / name).exists() for name in "abcd")  # nothing half-written
    # the onnxruntime backend ignores --max-batch-size (its config has 0: clients batch prompts)
    assert runner.invoke(app, ["triton-repo", graph, "--out", str(tmp_path / "e"), "--backend", "onnxruntime", "--max-batch-size", "0"]).exit_code == 0
