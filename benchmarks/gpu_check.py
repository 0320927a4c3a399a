"""One run on a lent GPU machine (no TensorRT there): numerics of the typed decoder on CUDA against
fp32 (TF32 off) on the verify matrix, and eager-PyTorch latency per prompt by form and precision.

Usage: PYTHONPATH=. python3 benchmarks/gpu_check.py [OUT_DIR]   (writes gpu_check.json there)
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from segdeploy import contract
from segdeploy.bench import bench_feeds
from segdeploy.compare import compare_outputs
from segdeploy.contract import MaskOutput
from segdeploy.forms import AttentionForm, GraphForm, Precision, UpscaleForm
from segdeploy.runners.torch_runner import TorchRunner
from segdeploy.registry import default_family

FAMILY = default_family()

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of the script itself
QUICK = DEVICE == "cpu"


def numerics(decoder, seeds: int) -> list[dict]:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    reference = TorchRunner(decoder, FAMILY.layout(MaskOutput.MULTI, True), device=DEVICE)
    rows = []
    for precision in Precision:
        for attention in AttentionForm:
            form = GraphForm(attention, UpscaleForm.MATMUL if attention is AttentionForm.FEWTOKEN else UpscaleForm.CONVTRANSPOSE, precision)
            candidate = TorchRunner(decoder, FAMILY.layout(MaskOutput.MULTI, True), device=DEVICE, form=form)
            worst = {"low_res_max_abs": 0.0, "iou_pred_max_abs": 0.0, "mask_iou_worst": 1.0, "mask_iou_mean_min": 1.0}
            passed = True
            with reference, candidate:
                for seed in range(seeds):
                    for case in FAMILY.draw_cases(np.random.default_rng(seed), 2 if QUICK else None, FAMILY.layout(MaskOutput.MULTI, True)):
                        results = compare_outputs(reference.infer(case.feeds), candidate.infer(case.feeds), contract.TOLERANCES[precision.value])
                        passed &= all(r.passed for r in results)
                        for r in results:
                            if r.name == "low_res_masks":
                                worst["low_res_max_abs"] = max(worst["low_res_max_abs"], r.max_abs)
                            if r.name == "iou_predictions":
                                worst["iou_pred_max_abs"] = max(worst["iou_pred_max_abs"], r.max_abs)
                            if r.mask_iou_worst is not None:
                                worst["mask_iou_worst"] = min(worst["mask_iou_worst"], r.mask_iou_worst)
                                worst["mask_iou_mean_min"] = min(worst["mask_iou_mean_min"], r.mask_iou_mean)
            rows.append({"form": form.describe(), "passed_own_tolerance": bool(passed), **worst})
            print("numerics", rows[-1], flush=True)
    return rows


def latency(decoder) -> list[dict]:
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    rng = np.random.default_rng(0)
    for precision in Precision:
        for attention in AttentionForm:
            form = GraphForm(attention, UpscaleForm.MATMUL if attention is AttentionForm.FEWTOKEN else UpscaleForm.CONVTRANSPOSE, precision)
            module = TorchRunner(decoder, FAMILY.layout(MaskOutput.MULTI, True), device=DEVICE, form=form).module
            for prompts in (1,) if QUICK else (1, 16, 64):
                for points in (2,) if QUICK else (2, 6):
                    feeds = bench_feeds(prompts, points, (1024, 1024), rng, True, family=FAMILY)
                    args = [torch.from_numpy(feeds[s.name]) for s in contract.input_specs(True)]
                    args = [a if s.name == "orig_im_size" else a.to(DEVICE) for a, s in zip(args, contract.input_specs(True))]
                    times = []
                    with torch.no_grad():
                        for i in range(2 if QUICK else 25):
                            if DEVICE == "cuda":
                                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                                start.record()
                                module(*args)
                                stop.record()
                                torch.cuda.synchronize()
                                elapsed = start.elapsed_time(stop)
                            else:
                                began = time.perf_counter()
                                module(*args)
                                elapsed = (time.perf_counter() - began) * 1000
                            if i >= (1 if QUICK else 5):
                                times.append(elapsed)
                    p50 = float(np.median(times))
                    rows.append({"form": form.describe(), "prompts": prompts, "points": points, "p50_ms": p50, "ms_per_prompt": p50 / prompts})
                    print(f"latency {form.describe():58} B={prompts:3d} N={points} p50 {p50:8.3f} ms  {p50 / prompts:7.3f} ms/prompt", flush=True)
    return rows


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    started = time.time()
    report = {
        "tensorrt_importable": importlib.util.find_spec("tensorrt") is not None,
        "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "none (cpu dry run)",
        "torch": torch.__version__,
    }
    print(report, flush=True)
    decoder, _ = FAMILY.load_decoder(FAMILY.default_variant, None, 0)
    report["numerics"] = numerics(decoder, seeds=1 if QUICK else 3)
    report["latency"] = latency(decoder)
    report["seconds"] = time.time() - started
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"done in {report['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
