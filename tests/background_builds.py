"""The session's slow builds, made by one background process while the other tests run: first the
identity manifest's exports (tests/shared_exports.py: each claimed by the first process to want it),
then the default graph's AOTInductor package at the README's ranges, the C++ example against the
torch wheel's libtorch, and SAM 2's package. The suite keeps about one of the two cores idle on
average, so this work (~50 s of exporting, ~90 s of compiling) costs little wall time; conftest moves
the tests that use it to the end.

    python tests/background_builds.py FOLDER EXPORTS

writes FOLDER/<step>.json ({"ok", "path", "output"}) as each step ends, in the order of STEPS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AOTI_RANGES = ["--prompts", "1:4:16", "--points", "1:4:16"]  # what the README's AOTInductor section builds with
SAM2_RANGES = ["--prompts", "1:2:8", "--points", "1:3:8"]
STEPS = ("package", "cpp_example", "sam2_package")


def _build_package(folder: Path, name: str, export_fields: dict, ranges: list[str]) -> tuple[bool, Path, str]:
    from typer.testing import CliRunner

    from segdeploy.cli import app
    from segdeploy.export import ExportOptions, export_onnx

    graph = export_onnx(ExportOptions(out=folder / f"{name}.onnx", **export_fields)).path
    out = folder / f"{name}.pt2"
    result = CliRunner().invoke(app, ["build-engine", "--runtime", "aoti", "--onnx", str(graph), "--out", str(out), *ranges])
    ok = result.exit_code == 0 and f"built {out} (fp32 on cpu, torch " in result.output
    return ok, out, result.output[-3000:]


def _build_cpp(folder: Path) -> tuple[bool, Path, str]:
    import torch.utils

    build = folder / "cpp"
    configure = ["cmake", "-S", str(ROOT / "examples/cpp"), "-B", str(build), f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"]
    for command in (configure, ["cmake", "--build", str(build), "-j", "2"]):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            return False, build, (done.stdout[-2000:] + done.stderr[-2000:])
    return True, build / "segdeploy_aoti", ""


def main(folder: Path, exports: Path) -> None:
    import os

    os.nice(19)  # the idle core's work: where the tests want both cores, they get them. Not fewer torch
    # threads: the random weights' calibration pass rounds differently with another thread count, and the
    # exports' bytes would change with it (tried: 31 identity and package tests failed)
    from shared_exports import SharedExports, export_all_identity_configs

    from segdeploy.contract import MaskOutput

    export_all_identity_configs(SharedExports(exports))  # no one waits for the step as such: each graph is claimed on its own
    steps = {
        "package": lambda: _build_package(folder, "decoder", {}, AOTI_RANGES),
        "cpp_example": lambda: _build_cpp(folder),
        "sam2_package": lambda: _build_package(folder, "sam2_all", {"variant": "sam2.1_hiera_tiny", "mask_output": MaskOutput.ALL}, SAM2_RANGES),
    }
    for name in STEPS:
        started = time.perf_counter()
        try:
            ok, path, output = steps[name]()
        except Exception as error:  # noqa: BLE001 - reported to the fixture that waits for it
            ok, path, output = False, folder, f"{type(error).__name__}: {error}"
        record = {"ok": ok, "path": str(path), "output": output, "seconds": time.perf_counter() - started}
        partial = folder / f"{name}.json.part"
        partial.write_text(json.dumps(record))
        partial.rename(folder / f"{name}.json")


class BackgroundBuilds:
    """The background process and a way to wait for one of its steps."""

    def __init__(self, folder: Path, exports: Path) -> None:
        self.folder = folder
        self.log = (folder / "builds.log").open("w")
        self.process = subprocess.Popen([sys.executable, __file__, str(folder), str(exports)], stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait(self, step: str, timeout: float = 900.0) -> Path:
        """The step's artefact; AssertionError with its output when it failed or never finished."""
        record = self.folder / f"{step}.json"
        deadline = time.monotonic() + timeout
        while not record.exists():
            if self.process.poll() is not None and not record.exists():
                raise AssertionError(f"the background builds ended (exit {self.process.returncode}) before {step}: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{step} not built after {timeout:.0f} s: {self._log_tail()}")
            time.sleep(0.2)
        done = json.loads(record.read_text())
        assert done["ok"], f"building {step} failed: {done['output']}"
        return Path(done["path"])

    def _log_tail(self) -> str:
        self.log.flush()
        return (self.folder / "builds.log").read_text()[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.log.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
