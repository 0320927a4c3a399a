"""The README's SAM 2 numbers: export the default SAM 2.1 graph (few-token attention, matmul
upscaling) and the TensorRT form (plain, ConvTranspose), count matrix FLOPs per prompt of both and of
the sam2 package's own modules exported as they are, then `segdeploy bench` the default graph beside
that baseline (same weights, process and threads) at B=1 and B=16, N=3 point slots.

Usage: python benchmarks/sam2_bench.py [--runs N]
Writes benchmarks/results/sam2-ort-cpu-fp32.{json,csv,png} and sam2-flops.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
VARIANT = "sam2.1_hiera_large"


def main(argv: list[str]) -> int:
    from segdeploy.bench import bench_feeds
    from segdeploy.cli import app
    from segdeploy.families.sam2.weights import load_decoder
    from segdeploy.registry import get_family
    from segdeploy.flops import count_flops

    runs = argv[argv.index("--runs") + 1] if "--runs" in argv else "10"
    runner = CliRunner()
    graphs = {
        "segdeploy default (fewtoken + matmul)": ROOT / "export/sam2_bench_default.onnx",
        "segdeploy tensorrt form (plain + convtranspose)": ROOT / "export/sam2_bench_plain.onnx",
    }
    for args in (["--out", str(graphs["segdeploy default (fewtoken + matmul)"])], ["--target", "tensorrt", "--out", str(graphs["segdeploy tensorrt form (plain + convtranspose)"])]):
        result = runner.invoke(app, ["export", "--variant", VARIANT, *args])
        print(result.output, end="")
        if result.exit_code:
            return result.exit_code
    flops = {}
    with tempfile.TemporaryDirectory() as scratch:
        official = get_family("sam2").export_baseline(load_decoder(VARIANT, seed=0)[0], Path(scratch) / "official.onnx")
        for points in (3, 6):
            feeds = bench_feeds(1, points, (1024, 1024), np.random.default_rng(0), True, family=get_family("sam2"))
            for label, path in [*graphs.items(), ("sam2 package modules, exported as they are", official)]:
                flops.setdefault(label, {})[f"N={points}"] = count_flops(path, feeds).per_prompt
    (ROOT / "benchmarks/results/sam2-flops.json").write_text(json.dumps(flops, indent=2) + "\n")
    for label, counts in flops.items():
        print(f"{label:50} " + "  ".join(f"{k}: {v / 1e9:.3f} GFLOP/prompt" for k, v in counts.items()))
    result = runner.invoke(app, [
        "bench", "--onnx", str(graphs["segdeploy default (fewtoken + matmul)"]), "--baseline", "official",
        "--prompts", "1,16", "--points", "3", "--runs", runs, "--name", "sam2-ort-cpu-fp32",
    ])
    print(result.output, end="")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
