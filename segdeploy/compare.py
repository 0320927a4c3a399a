"""Comparing a candidate's outputs with the reference's, per output name, against a Tolerance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segdeploy import contract
from segdeploy.contract import Tolerance

LOGIT_OUTPUTS = frozenset({"masks", "low_res_masks"})
IOU_OUTPUT = "iou_predictions"
# SAM 2's object-score logit: within iou_pred_abs absolutely or relative to its peak (logits of
# trained decoders reach tens, where a fixed absolute bound would ask more of fp16 than of the IoU).
SCORE_OUTPUT = "object_score_logits"


@dataclass
class OutputMetrics:
    """Errors of one output in one case."""

    name: str
    max_abs: float
    mean_abs: float
    rel: float  # max_abs / max |reference|
    mask_iou_worst: float | None = None
    mask_iou_mean: float | None = None
    passed: bool = True
    failure: str = ""


def binarized_iou(reference: np.ndarray, candidate: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """IoU of (logit > 0) per [B, M] mask; two empty masks count as 1. A pixel whose reference logit
    lies within ``margin`` of 0 counts as agreeing: a rounding within the logit tolerance may flip
    it, and on a tiny image a few such pixels would decide the IoU (verify bounds their logits)."""
    ref = reference > 0
    got = candidate > 0
    if margin > 0:
        got = np.where(np.abs(reference) <= margin, ref, got)
    axes = tuple(range(2, ref.ndim))
    inter = np.logical_and(ref, got).sum(axis=axes, dtype=np.float64)
    union = np.logical_or(ref, got).sum(axis=axes, dtype=np.float64)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def compare_output(name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: Tolerance) -> OutputMetrics:
    """Metrics of one output and whether they are within ``tolerance``."""
    if reference.shape != candidate.shape:
        return OutputMetrics(name, np.inf, np.inf, np.inf, passed=False,
                             failure=f"shape {list(candidate.shape)} != reference {list(reference.shape)}")
    ref = reference.astype(np.float64)
    diff = np.abs(candidate.astype(np.float64) - ref)
    finite = bool(np.isfinite(candidate).all())
    max_abs = float(diff.max()) if finite else float("inf")
    peak = float(np.abs(ref).max())
    metrics = OutputMetrics(name, max_abs, float(diff.mean()) if finite else float("inf"), max_abs / peak if peak else max_abs)
    failures = []
    if not finite:
        failures.append("non-finite values")
    if name in LOGIT_OUTPUTS:
        ious = binarized_iou(reference, candidate, margin=tolerance.logit_abs)
        metrics.mask_iou_worst, metrics.mask_iou_mean = float(ious.min()), float(ious.mean())
        if metrics.max_abs > tolerance.logit_abs:
            if name != "masks":
                failures.append(f"max abs {metrics.max_abs:.3g} > {tolerance.logit_abs:g}")
            elif metrics.rel > tolerance.resized_logit_rel:
                failures.append(f"max abs {metrics.max_abs:.3g} > {tolerance.logit_abs:g} and rel {metrics.rel:.3g} > {tolerance.resized_logit_rel:g}")
        if metrics.mask_iou_worst < tolerance.mask_iou_worst:
            failures.append(f"worst mask IoU {metrics.mask_iou_worst:.4f} < {tolerance.mask_iou_worst}")
        if metrics.mask_iou_mean < tolerance.mask_iou_mean:
            failures.append(f"mean mask IoU {metrics.mask_iou_mean:.4f} < {tolerance.mask_iou_mean}")
    elif name == IOU_OUTPUT and metrics.max_abs > tolerance.iou_pred_abs:
        failures.append(f"max abs {metrics.max_abs:.3g} > {tolerance.iou_pred_abs:g}")
    elif name == SCORE_OUTPUT and metrics.max_abs > tolerance.iou_pred_abs and metrics.rel > tolerance.iou_pred_abs:
        failures.append(f"max abs {metrics.max_abs:.3g} and rel {metrics.rel:.3g} > {tolerance.iou_pred_abs:g}")
    metrics.passed = not failures
    metrics.failure = "; ".join(failures)
    return metrics


def compare_outputs(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], tolerance: Tolerance
) -> list[OutputMetrics]:
    """Compare every reference output by name; a missing candidate output fails."""
    results = []
    for name, ref in reference.items():
        if name not in candidate:
            results.append(OutputMetrics(name, np.inf, np.inf, np.inf, passed=False, failure="missing output"))
        else:
            results.append(compare_output(name, ref, candidate[name], tolerance))
    return results


def contract_problems(declared_inputs, declared_outputs, layout: contract.GraphLayout, output_dims: bool = True) -> list[str]:
    """Differences between a graph's declared I/O and the contract (names, order, dtypes, dims;
    ``output_dims=False`` for foreign graphs, whose exporters name output dims as they like)."""
    problems = []
    for kind, declared, expected in (("input", declared_inputs, layout.inputs()), ("output", declared_outputs, layout.outputs())):
        if [s.name for s in declared] != [s.name for s in expected]:
            problems.append(f"{kind}s are {[s.name for s in declared]}, contract says {[s.name for s in expected]}")
            continue
        for got, want in zip(declared, expected):
            if got.dtype != want.dtype:
                problems.append(f"{kind} {got.name} is {got.dtype}, contract says {want.dtype}")
            if got.dims != want.dims and (kind == "input" or output_dims):
                problems.append(f"{kind} {got.name} has dims {got.shape_text()}, contract says {want.shape_text()}")
    return problems
