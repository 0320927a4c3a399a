"""The issue's speed targets, measured side by side: fp32 graph vs the official export, onnxruntime
CPU, 2 threads, orig size 1024x1024, 3 point slots, B=1 and B=16; repeated to show the spread on a
shared machine. Usage: python benchmarks/targets.py [REPEATS]"""

from __future__ import annotations

import sys

from run_benchmarks import ROOT


def main(repeats: int) -> int:
    from segdeploy.bench import BenchOptions, render_bench, run_bench
    from segdeploy.export import ExportOptions, export_onnx

    graph = export_onnx(ExportOptions(out=ROOT / "export/bench_fp32.onnx")).path
    for repeat in range(repeats):
        report = run_bench(BenchOptions(
            onnx=graph, prompts=(1, 16), points=(3,), runs=20, baseline="official",
            out_dir=ROOT / "benchmarks/results", name=f"targets-fp32-n3-run{repeat + 1}",
        ))
        print(render_bench(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
