"""AOTInductor on a lent GPU: build CUDA packages of the default graph (fp32 with TF32, and fp16),
verify each against the fp32 eager model on the verify matrix (tf32 / fp16 thresholds of
segdeploy/contract.py), and bench them against eager CUDA in the same run, B = 1..1024 prompts per
call. Writes benchmarks/results/aoti-gpu.json (partial results too, if a step fails).

Usage: PYTHONPATH=. python3 benchmarks/aoti_gpu.py [OUT_JSON]
On a machine without CUDA it does a dry run of itself on the CPU (one fp32 CPU package, tiny sizes).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from segdeploy import contract
from segdeploy.aoti.builder import build_package, plan_package
from segdeploy.bench import bench_feeds
from segdeploy.export import ExportOptions, export_onnx
from segdeploy.forms import AttentionForm, GraphForm, Precision, UpscaleForm
from segdeploy.runners.aoti_runner import AotiRunner
from segdeploy.runners.torch_runner import TorchRunner
from segdeploy.tensorrt.profiles import Range
from segdeploy.verify import VerifyOptions, verify_graph
from segdeploy.registry import default_family

FAMILY = default_family()

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
PROMPTS = (1, 4, 16, 64, 256, 1024) if CUDA else (1, 2)
POINTS = 3  # two clicks and SAM's padding point
ORIG_SIZE = (1024, 1024)
RUNS, WARMUP = (30, 10) if CUDA else (2, 1)
PACKAGE_RANGES = dict(prompts=Range(1, 64, 1024), points=Range(1, 4, 16)) if CUDA else dict(prompts=Range(1, 2, 8), points=Range(1, 3, 16))
GOALS = {"fp16_prompts_per_s": 20000, "b1_latency_ms": 1.0}


def timed(call, runs: int = RUNS, warmup: int = WARMUP) -> float:
    """p50 milliseconds of ``call()`` (CUDA events on the GPU)."""
    times = []
    for i in range(warmup + runs):
        if CUDA:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            stop.record()
            torch.cuda.synchronize()
            elapsed = start.elapsed_time(stop)
        else:
            began = time.perf_counter()
            call()
            elapsed = (time.perf_counter() - began) * 1000
        if i >= warmup:
            times.append(elapsed)
    return float(np.median(times))


def device_args(feeds: dict[str, np.ndarray]) -> list[torch.Tensor]:
    args = []
    for spec in contract.input_specs(True):
        tensor = torch.from_numpy(feeds[spec.name])
        args.append(tensor if spec.name == contract.ORIG_IM_SIZE.name else tensor.to(DEVICE))
    return args


def bench_rows(label: str, precision: str, module) -> list[dict]:
    rows, rng = [], np.random.default_rng(0)
    for prompts in PROMPTS:
        args = device_args(bench_feeds(prompts, POINTS, ORIG_SIZE, rng, True, family=FAMILY))
        with torch.no_grad():
            p50 = timed(lambda: module(*args))
        rows.append({"runtime": label, "precision": precision, "prompts": prompts, "points": POINTS, "p50_ms": p50,
                     "ms_per_prompt": p50 / prompts, "prompts_per_s": 1000 * prompts / p50})
        print(f"{label:6} {precision:5} B={prompts:5d} p50 {p50:9.3f} ms  {1000 * prompts / p50:10.0f} prompts/s", flush=True)
        del args
        if CUDA:
            torch.cuda.empty_cache()
    return rows


def top_kernels(module, prompts: int) -> list[dict]:
    """The ten CUDA kernels with the most time in a few calls at ``prompts`` per call."""
    from torch.profiler import ProfilerActivity, profile

    args = device_args(bench_feeds(prompts, POINTS, ORIG_SIZE, np.random.default_rng(1), True, family=FAMILY))
    with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            module(*args)
        torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)[:10]
    return [{"kernel": e.key[:120], "cuda_ms_total": e.device_time_total / 1000, "calls": e.count} for e in events]


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results/aoti-gpu.json")
    report: dict = {"gpu": torch.cuda.get_device_name(0) if CUDA else "none (CPU dry run)", "torch": torch.__version__,
                    "points": POINTS, "orig_size": ORIG_SIZE, "packages": [], "latency": [], "errors": []}
    started = time.time()
    save = lambda: out.write_text(json.dumps({**report, "seconds": time.time() - started}, indent=2) + "\n")  # noqa: E731
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="aoti-gpu-"))
    try:
        return run(report, work, save)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(report: dict, work: Path, save) -> int:
    """Build, verify and bench each precision into ``report`` (saved after every step)."""
    graph = export_onnx(ExportOptions(out=work / "decoder.onnx")).path  # default form: fewtoken + matmul, fp32
    decoder, _ = FAMILY.load_decoder(FAMILY.default_variant, None, 0)
    precisions = (Precision.FP32, Precision.FP16) if CUDA else (Precision.FP32,)
    for precision in precisions:
        try:
            options = plan_package(graph, work / f"decoder_{precision.value}.pt2", DEVICE, precision, **PACKAGE_RANGES)
            built = build_package(options, lambda message: print(f"[{precision.value}] {message}", flush=True))
            verified = verify_graph(VerifyOptions(onnx=graph, engine=built.package, cases=None if CUDA else 2, seed=0))
            worst = {name: verified.worst(name, "max_abs") for name in ("low_res_masks", "masks", "iou_predictions")}
            report["packages"].append({"precision": precision.value, "tolerance_class": verified.precision, "tf32": built.info.tf32,
                                       "build_seconds": round(built.seconds, 1), "verify_passed": verified.passed,
                                       "worst_max_abs": worst, "worst_mask_iou": verified.worst("low_res_masks", "mask_iou_worst")})
            print("verify", report["packages"][-1], flush=True)
            save()
            aoti = AotiRunner.from_package(built.package)
            aoti.activate()
            torch.backends.cuda.matmul.allow_tf32 = built.info.tf32
            report["latency"] += bench_rows("aoti", precision.value, aoti.model)
            form = GraphForm(AttentionForm.FEWTOKEN, UpscaleForm.MATMUL, precision)
            eager = TorchRunner(decoder, FAMILY.layout(contract.MaskOutput.MULTI, True), device=DEVICE, form=form).module
            report["latency"] += bench_rows("eager", precision.value, eager)
            if CUDA and precision is Precision.FP16:
                best = max((r for r in report["latency"] if r["runtime"] == "aoti" and r["precision"] == "fp16"), key=lambda r: r["prompts_per_s"])
                report["fp16_top_kernels_at_best_batch"] = top_kernels(aoti.model, best["prompts"])
            aoti.deactivate()
            save()
        except Exception as error:  # keep what was measured; say what failed
            report["errors"].append({"precision": precision.value, "error": f"{type(error).__name__}: {error}"[:2000], "trace": traceback.format_exc()[-4000:]})
            print(f"[{precision.value}] FAILED: {type(error).__name__}: {error}", flush=True)
            save()
    aoti_rows = [r for r in report["latency"] if r["runtime"] == "aoti"]
    report["summary"] = {
        precision: {
            "best_prompts_per_s": max((r["prompts_per_s"] for r in aoti_rows if r["precision"] == precision), default=None),
            "b1_latency_ms": next((r["p50_ms"] for r in aoti_rows if r["precision"] == precision and r["prompts"] == 1), None),
        } for precision in (p.value for p in precisions)
    }
    report["goals"] = GOALS
    save()
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {report['gpu']} results")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
