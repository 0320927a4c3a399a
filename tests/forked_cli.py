"""`segdeploy ARGS` as a process of its own, forked from a server that has already imported what
every command imports (torch, onnx, onnxruntime, onnxscript: about 2.5 s of each command's start on
this machine). Each command still gets its own process, working folder, environment, stdout, stderr
and exit code, as the console script gives it; only the interpreter's start and the imports are
shared. The README test runs its ~50 `segdeploy` lines this way."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

PRELOAD = ["torch", "onnx", "onnxruntime", "onnxscript", "numpy", "typer", "segdeploy.cli"]
_context = None


def _server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(argv: Sequence[str], cwd: str, env: Mapping[str, str], out: str, err: str) -> None:
    """The command in this forked process: segdeploy.cli.main with ``argv``, its exit code ours."""
    code = 1
    try:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        for fd, path in ((1, out), (2, err)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        sys.stdin = open(os.devnull)  # noqa: SIM115
        from segdeploy.cli import main

        sys.argv = list(argv)
        try:
            main(prog_name="segdeploy")
            code = 0
        except SystemExit as done:  # what the console script's sys.exit(main()) turns into an exit code
            if done.code is None or isinstance(done.code, int):
                code = done.code or 0
            else:
                print(done.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - an uncaught exception: the traceback and exit 1, as Python does
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_segdeploy(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``segdeploy argv[1:]`` (argv[0] is "segdeploy"); subprocess.TimeoutExpired after ``timeout``."""
    with tempfile.TemporaryDirectory(prefix="segdeploy-forked-") as folder:
        out, err = os.path.join(folder, "out"), os.path.join(folder, "err")
        process = _server().Process(target=_child, args=(list(argv), str(cwd), dict(env), out, err))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(list(argv), timeout)
        read = lambda path: Path(path).read_text(errors="replace") if os.path.exists(path) else ""  # noqa: E731
        return subprocess.CompletedProcess(list(argv), process.exitcode, read(out), read(err))
