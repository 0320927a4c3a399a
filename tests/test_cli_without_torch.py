"""Without PyTorch (a serving install), commands that need it say so in one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_TORCH = textwrap.dedent('''
    import sys, importlib.abc
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError("No module named 'torch'", name="torch")
    sys.meta_path.insert(0, NoTorch())
    sys.argv = ["segdeploy", *sys.argv[1:]]
    from segdeploy.cli import main
    main(prog_name="segdeploy")
''')


def test_export_without_torch_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "export", "--out", str(tmp_path / "g.onnx")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "segdeploy[torch]" in done.stderr
    assert "Traceback" not in done.stderr


def test_info_runs_without_torch(exported, tmp_path):
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "info", str(exported.path)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
