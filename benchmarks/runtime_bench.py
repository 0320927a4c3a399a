"""The runtime's own costs on this machine: cross-image batching (64 prompts on 8 images, one call
of the multi-image graph, masks resized on the host) against a single-image call with the same prompt
count, predict()'s per-call Python overhead at one prompt, and host-side postprocessing.

    python benchmarks/runtime_bench.py [RUNS]

Exports both graphs (default form, --mask-output all, random weights) into a temporary folder and
writes benchmarks/results/runtime-cpu.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from segdeploy.bench import machine_info
from segdeploy.contract import MaskOutput
from segdeploy.export import ExportOptions, export_onnx
from segdeploy.runtime.bench import bench_runtime

THREADS = 2
RESULTS = Path(__file__).parent / "results" / "runtime-cpu.json"


def main(runs: int) -> None:
    import torch

    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory(prefix="segdeploy-runtime-bench-") as scratch:
        multi = export_onnx(ExportOptions(out=Path(scratch) / "multi.onnx", mask_output=MaskOutput.ALL, multi_image=True)).path
        single = export_onnx(ExportOptions(out=Path(scratch) / "single.onnx", mask_output=MaskOutput.ALL)).path
        report = bench_runtime(multi, single, prompts=64, images=8, runs=runs, threads=THREADS)
    data = {"machine": machine_info(THREADS), **report.to_dict()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    for name, value in report.ms.items():
        print(f"{name:48} {value:9.2f} ms")
    for name, value in report.ratios.items():
        print(f"{name:48} {value:9.3f}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
