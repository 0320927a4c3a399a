"""Peak memory of one backend call per prompt, per graph flavor and attention form, on onnxruntime's
CPU provider: the numbers ``segdeploy.runtime.memory`` sizes calls by.

    python benchmarks/call_memory.py              # measure the slopes (about 10 minutes on 2 cores)
    python benchmarks/call_memory.py --goal       # peak RSS of predict_batch at the issue's batch sizes

Each point runs in a fresh subprocess: load the graph, one warm-up call of one prompt, then one call
of B prompts with no budget (``max_call_bytes`` huge); the point is the growth of peak RSS
(VmHWM, reset through /proc/self/clear_refs after the warm-up, less VmRSS then) over that call. The cost per prompt is the slope between two prompt counts; per
output pixel, the slope between two original sizes; per point slot, between two point counts.
Writes benchmarks/results/call-memory.json (or call-memory-goal.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
THREADS = 2
FORMS = {"fewtoken": "onnxruntime", "plain": "tensorrt"}  # attention form: the target whose default it is

CHILD = r"""
import json, resource, sys
import numpy as np
from segdeploy import Decoder, Prompt
path, prompts, points, height, width, images, budget = sys.argv[1:8]
prompts, points, height, width, images = int(prompts), int(points), int(height), int(width), int(images)
rng = np.random.default_rng(0)
decoder = Decoder.load(path, threads=%d, max_call_bytes=int(budget))
embeddings = [rng.standard_normal((256, 64, 64)).astype(np.float32) for _ in range(images)]
def prompt(i):
    clicks = rng.uniform(0, [width, height], (points - 1, 2))
    return Prompt(embeddings[i %% images], (height, width), clicks, np.ones(points - 1), multimask_output=True)
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
decoder.predict_batch([prompt(0)])
batch = [prompt(i) for i in range(prompts)]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current RSS
before = status("VmRSS")
decoder.predict_batch(batch)
after = status("VmHWM")
print(json.dumps({"before": before, "after": after, "growth": after - before, "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
""" % THREADS


def point(path: Path, prompts: int, points: int = 2, size: tuple[int, int] = (64, 64), images: int = 1, budget: int = 1 << 62) -> dict:
    args = [sys.executable, "-c", CHILD, str(path), str(prompts), str(points), str(size[0]), str(size[1]), str(images), str(budget)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"  {path.name} B={prompts} N={points} {size[0]}x{size[1]} images={images}: peak +{result['growth'] / 2**20:.0f} MiB (peak {result['after'] / 2**30:.2f} GiB)", flush=True)
    return result


def export(scratch: Path, attention: str, multi_image: bool) -> Path:
    from segdeploy.contract import MaskOutput
    from segdeploy.export import ExportOptions, export_onnx
    from segdeploy.forms import Target

    name = f"{attention}_{'multi' if multi_image else 'single'}.onnx"
    options = ExportOptions(out=scratch / name, target=Target(FORMS[attention]), multi_image=multi_image,
                            mask_output=MaskOutput.ALL if multi_image else MaskOutput.MULTI)
    return export_onnx(options).path


def slopes(scratch: Path) -> dict:
    small, large, big = 4, 20, (512, 512)
    data = {}
    for attention in FORMS:
        for multi_image in (False, True):
            path = export(scratch, attention, multi_image)
            flavor = "multi" if multi_image else "single"
            a = point(path, small)["growth"]
            b = point(path, large)["growth"]
            fixed = (b - a) / (large - small)
            entry = {"per_prompt_bytes_64x64": fixed, "points": {str(small): a, str(large): b}}
            if not multi_image:  # in-graph resize: 3 float masks per prompt at the original size
                c = point(path, large, size=big)["growth"]
                entry["per_mask_pixel_bytes"] = (c - b) / (large * 3 * (big[0] * big[1] - 64 * 64))
                entry[f"growth_{large}_at_{big[0]}x{big[1]}"] = c
            if attention == "fewtoken":
                d = point(path, large, points=18)["growth"]
                entry["per_point_slot_bytes"] = (d - b) / (large * 16)
            data[f"{flavor}/{attention}"] = entry
    return data


def goal(scratch: Path) -> dict:
    """Peak RSS of predict_batch under the default budget at the issue's sizes (and unchunked, for scale)."""
    from segdeploy.runtime.memory import DEFAULT_MAX_CALL_BYTES

    single = export(scratch, "fewtoken", False)
    multi = export(scratch, "fewtoken", True)
    return {
        "single_1024_prompts_1_image_64x64": point(single, 1024, budget=DEFAULT_MAX_CALL_BYTES),
        "multi_256_prompts_32_images_64x64": point(multi, 256, images=32, budget=DEFAULT_MAX_CALL_BYTES),
        "multi_256_prompts_32_images_1024x1024": point(multi, 256, size=(1024, 1024), images=32, budget=DEFAULT_MAX_CALL_BYTES),
        "default_max_call_bytes": DEFAULT_MAX_CALL_BYTES,
    }


def main() -> None:
    from segdeploy.bench import machine_info

    goal_run = "--goal" in sys.argv
    with tempfile.TemporaryDirectory(prefix="segdeploy-call-memory-") as scratch:
        data = goal(Path(scratch)) if goal_run else slopes(Path(scratch))
    out = RESULTS / ("call-memory-goal.json" if goal_run else "call-memory.json")
    out.write_text(json.dumps({"machine": machine_info(THREADS), "backend": "onnxruntime CPU", **data}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
