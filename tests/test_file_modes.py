"""Files segdeploy writes are readable as the umask says (0644 under 022, 0640 under 027), written
atomically: a temporary file alone would be 0600, which a service running as another user cannot read."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segdeploy.cli import app
from segdeploy.graph_io import write_atomically

runner = CliRunner()


@contextmanager
def umask(value: int):
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640)])
def test_write_atomically_follows_the_umask(tmp_path, mask, expected):
    """Fault: without the fchmod in write_atomically, files are 0600 whatever the umask."""
    with umask(mask):
        write_atomically(tmp_path / "a.json", b"{}")
        source = tmp_path / "private.bin"
        source.write_bytes(b"x")
        source.chmod(0o600)
        write_atomically(tmp_path / "copy.bin", copy_from=source)
    assert mode(tmp_path / "a.json") == expected and mode(tmp_path / "copy.bin") == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


@pytest.mark.parametrize("mask, expected", [(0o027, 0o640)])  # 022 is the unit test's; one end-to-end run keeps the suite quick
def test_export_bench_verify_and_triton_repo_files(exported, tmp_path, mask, expected):
    """export (the fixture's graph is re-exported here), bench results, verify report and the model
    copied into a Triton repository (from a 0600 source) all follow the umask."""
    private = tmp_path / "private.onnx"
    private.write_bytes(exported.path.read_bytes())
    private.chmod(0o600)
    with umask(mask):
        out = tmp_path / "g.onnx"
        assert runner.invoke(app, ["export", "--out", str(out), "--report", str(tmp_path / "export.json")]).exit_code == 0
        bench = runner.invoke(app, ["bench", "--onnx", str(out), "--prompts", "1", "--points", "2", "--runs", "1", "--warmup", "0",
                                    "--orig-size", "32x32", "--out-dir", str(tmp_path / "bench")])
        assert bench.exit_code == 0, bench.output
        verify = runner.invoke(app, ["verify", "--onnx", str(out), "--cases", "1", "--seed", "1", "--report", str(tmp_path / "verify.json")])
        assert verify.exit_code == 0, verify.output
        for backend in ("python", "onnxruntime"):
            repo = runner.invoke(app, ["triton-repo", str(private), "--out", str(tmp_path / backend), "--backend", backend])
            assert repo.exit_code == 0, repo.output
    written = [out, tmp_path / "export.json", tmp_path / "verify.json", *(tmp_path / "bench").iterdir(),
               *(p for backend in ("python", "onnxruntime") for p in (tmp_path / backend).rglob("*") if p.is_file())]
    assert len(written) >= 9
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written} == {str(p.relative_to(tmp_path)): oct(expected) for p in written}
