"""Produce the README's benchmark numbers: export the default graph, then `segdeploy bench` it
beside the official segment-anything export (same weights, same process, same threads).

Usage: python benchmarks/run_benchmarks.py [--quick] [extra `segdeploy bench` options]
Writes benchmarks/results/<name>.{json,csv,png}.
"""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    from segdeploy.cli import app

    quick = "--quick" in argv
    extra = [a for a in argv if a != "--quick"]
    runner = CliRunner()
    graphs = {
        "fp32": ["export", "--out", str(ROOT / "export/bench_fp32.onnx")],
        "fp32-plain": ["export", "--attention", "plain", "--upscale", "convtranspose", "--out", str(ROOT / "export/bench_fp32_plain.onnx")],
        "fp16": ["export", "--precision", "fp16", "--out", str(ROOT / "export/bench_fp16.onnx")],
    }
    for args in graphs.values():
        result = runner.invoke(app, args)
        print(result.output, end="")
        if result.exit_code:
            return result.exit_code
    sweep = ["--prompts", "1,16", "--points", "3", "--runs", "5"] if quick else []
    for label in ("fp32", "fp32-plain", "fp16"):
        path = graphs[label][-1]
        baseline = ["--baseline", "official"] if label == "fp32" else []
        args = ["bench", "--onnx", path, "--name", f"ort-cpu-{label}", *baseline, *sweep, *extra]
        result = runner.invoke(app, args)
        print(result.output, end="")
        if result.exit_code:
            return result.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
