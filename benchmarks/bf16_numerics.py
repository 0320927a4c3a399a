"""bf16 numerics where ONNX Runtime's CPU provider cannot run a bf16 graph, on each family's verify
matrix with fresh case draws, checked against contract.TOLERANCES:

- eager: the typed decoder module (what `segdeploy export --precision bf16` traces, same casts) in
  PyTorch against the fp32 eager model, for the bf16 forms and, for scale, fp16;
- graph: the exported bf16 graph itself (the tensorrt target's form) run by ONNX's reference
  evaluator (numpy + ml_dtypes bfloat16) under `verify`'s own comparison (ragged checks included).

Usage: python benchmarks/bf16_numerics.py [--seeds N] [--graph-seeds M] [--threads T] [--out FILE]
(default 3 and 1 seeds, 2 threads, benchmarks/results/bf16-cpu.json). Prints one line per row.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import torch

from segdeploy import contract
from segdeploy.bench import machine_info
from segdeploy.compare import binarized_iou, compare_outputs
from segdeploy.contract import MaskOutput
from segdeploy.registry import get_family
from segdeploy.forms import AttentionForm, GraphForm, Precision, UpscaleForm
from segdeploy.runners.torch_runner import TorchRunner

FAMILIES = {"sam1": "sam_vit_b", "sam2": "sam2.1_hiera_tiny"}
FORMS = (  # the tensorrt target's bf16 default, the onnxruntime default, and fp16 for scale
    GraphForm(AttentionForm.PLAIN, UpscaleForm.MATMUL, Precision.BF16),
    GraphForm(AttentionForm.FEWTOKEN, UpscaleForm.MATMUL, Precision.BF16),
    GraphForm(AttentionForm.PLAIN, UpscaleForm.MATMUL, Precision.FP16),
)


def measure(family_name: str, form: GraphForm, seeds: list[int]) -> dict:
    family = get_family(family_name)
    decoder, _ = family.load_decoder(FAMILIES[family_name], None, 0)
    layout = family.layout(MaskOutput.MULTI, True)
    reference = TorchRunner(decoder, layout)
    candidate = TorchRunner(decoder, layout, form=form)
    tolerance = contract.TOLERANCES[form.precision.value]
    row = {"family": family_name, "form": form.describe(), "cases": 0, "failed_cases": 0, "failures": {},
           "low_res_max_abs": 0.0, "masks_max_rel": 0.0, "iou_pred_max_abs": 0.0, "score_max_abs": None,
           "mask_iou_worst": 1.0, "mask_iou_case_mean_min": 1.0, "below_worst_threshold": []}
    ious_all = []
    with reference, candidate:
        for seed in seeds:
            for case in family.draw_cases(np.random.default_rng(seed), None, layout):
                expected, got = reference.infer(case.feeds), candidate.infer(case.feeds)
                results = compare_outputs(expected, got, tolerance)
                row["cases"] += 1
                row["failed_cases"] += not all(r.passed for r in results)
                for r in results:
                    for failure in filter(None, r.failure.split("; ")):
                        key = f"{r.name}: {failure.split(' ')[0]} {failure.split(' ')[1]} {failure.split(' ')[2]}"
                        row["failures"][key] = row["failures"].get(key, 0) + 1
                    if r.name == "low_res_masks":
                        row["low_res_max_abs"] = max(row["low_res_max_abs"], r.max_abs)
                    if r.name == "masks":
                        row["masks_max_rel"] = max(row["masks_max_rel"], r.rel)
                    if r.name == "iou_predictions":
                        row["iou_pred_max_abs"] = max(row["iou_pred_max_abs"], r.max_abs)
                    if r.name == "object_score_logits":
                        row["score_max_abs"] = max(row["score_max_abs"] or 0.0, r.max_abs)
                    if r.mask_iou_worst is not None:
                        row["mask_iou_worst"] = min(row["mask_iou_worst"], r.mask_iou_worst)
                        row["mask_iou_case_mean_min"] = min(row["mask_iou_case_mean_min"], r.mask_iou_mean)
                for name in ("low_res_masks", "masks"):
                    ious = binarized_iou(expected[name], got[name]).ravel()
                    areas = (expected[name] > 0).sum(axis=(2, 3)).ravel()
                    ious_all += [(name, iou) for iou in ious.tolist()]
                    row["below_worst_threshold"] += [
                        {"output": name, "case": case.spec.name, "iou": round(iou, 4), "reference_area_px": int(area)}
                        for iou, area in zip(ious.tolist(), areas.tolist()) if iou < tolerance.mask_iou_worst
                    ]
    for name in ("low_res_masks", "masks"):
        values = [iou for output, iou in ious_all if output == name]
        row[f"{name}_iou_mean"], row[f"{name}_count"] = float(np.mean(values)), len(values)
    row["passed_own_tolerance"] = row["failed_cases"] == 0
    return row


def measure_graph(family_name: str, seed: int, folder: Path) -> dict:
    from segdeploy.export import ExportOptions, export_onnx
    from segdeploy.forms import Target
    from segdeploy.runners.reference_runner import ReferenceRunner
    from segdeploy.verify import VerifyOptions, verify_graph

    options = ExportOptions(variant=FAMILIES[family_name], precision=Precision.BF16, target=Target.TENSORRT, out=folder / f"{family_name}_bf16.onnx")
    exported = export_onnx(options)
    layout = options.layout
    candidate = ReferenceRunner(exported.path, layout.inputs(), layout.output_names())
    report = verify_graph(VerifyOptions(onnx=exported.path, seed=seed), candidate=candidate)
    failures: dict[str, int] = {}
    for case in report.cases:
        for o in case.outputs + ([case.ragged] if case.ragged else []):
            for failure in filter(None, o.failure.split("; ")):
                key = f"{o.name}: {' '.join(failure.split(' ')[:3])}"
                failures[key] = failures.get(key, 0) + 1
    ious = [(o.mask_iou_worst, o.mask_iou_mean) for c in report.cases for o in c.outputs if o.mask_iou_worst is not None]
    return {
        "family": family_name, "form": exported.form, "candidate": candidate.name, "seed": seed, "cases": len(report.cases),
        "failed_cases": sum(not c.passed for c in report.cases), "failures": failures,
        "low_res_max_abs": report.worst("low_res_masks", "max_abs"), "masks_max_rel": report.worst("masks", "rel"),
        "iou_pred_max_abs": report.worst("iou_predictions", "max_abs"), "score_max_abs": report.worst("object_score_logits", "max_abs"),
        "mask_iou_worst": min(w for w, _ in ious), "mask_iou_case_mean_min": min(m for _, m in ious),
        "ragged_max_abs": max((c.ragged.max_abs for c in report.cases if c.ragged), default=None),
        "seconds": round(report.seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--graph-seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bf16-cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [secrets.randbits(31) for _ in range(args.seeds)]
    started = time.time()
    report = {"machine": machine_info(args.threads), "torch": torch.__version__,
              "onnx": onnx.__version__, "ml_dtypes": ml_dtypes.__version__, "weights": "random, seed 0", "case_seeds": seeds, "rows": []}
    for family_name in FAMILIES:
        for form in FORMS:
            row = measure(family_name, form, seeds)
            report["rows"].append(row)
            print(f"{family_name} {form.describe():52} cases {row['cases']:3d} failed {row['failed_cases']:3d} | "
                  f"low-res max abs {row['low_res_max_abs']:.3f}, masks rel {row['masks_max_rel']:.2e}, "
                  f"IoU pred {row['iou_pred_max_abs']:.2e}, score {'-' if row['score_max_abs'] is None else format(row['score_max_abs'], '.2e')} | "
                  f"mask IoU worst {row['mask_iou_worst']:.4f}, case mean min {row['mask_iou_case_mean_min']:.4f}, "
                  f"mean {row['low_res_masks_iou_mean']:.5f} (low-res) {row['masks_iou_mean']:.5f} (full size) | "
                  f"failures {row['failures']}; below worst IoU: {row['below_worst_threshold']}", flush=True)
    report["graph_case_seeds"] = [secrets.randbits(31) for _ in range(args.graph_seeds)]
    report["graph_rows"] = []
    with tempfile.TemporaryDirectory() as folder:
        for family_name in FAMILIES:
            for seed in report["graph_case_seeds"]:
                row = measure_graph(family_name, seed, Path(folder))
                report["graph_rows"].append(row)
                print(f"graph {family_name} {row['form']} on {row['candidate']}, seed {seed}: {json.dumps(row)}", flush=True)
    report["seconds"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"seeds {seeds}; wrote {args.out} in {report['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
