"""How much memory one backend call takes, and how many prompts fit a budget.

A call's peak grows linearly with its prompts: every prompt carries its own copy of the image
embedding through the two-way transformer, and a postprocessing graph also its masks at the original
size. The numbers are measured (peak RSS growth per prompt on onnxruntime's CPU provider, by
``benchmarks/call_memory.py``; results in ``benchmarks/results/call-memory.json``) per graph flavor
and attention form. ``serve`` and ``Decoder`` size their batches with :func:`prompts_per_call`.
"""

from __future__ import annotations

from dataclasses import dataclass

from segdeploy.errors import BadInputError

# A call's peak under this by default: 2 GiB leaves room for several workers on a 24 GB machine.
DEFAULT_MAX_CALL_BYTES = 2 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class PromptCost:
    """Peak bytes a prompt adds to a call: a fixed part, one per extra point slot, and (graphs that
    resize in-graph) one per output pixel per returned mask."""

    fixed: int
    per_point: int
    per_mask_pixel: int


# Measured by benchmarks/call_memory.py (benchmarks/results/call-memory.json, onnxruntime 1.32 CPU):
# the slope of peak RSS over prompts per call (4 and 20 prompts, 64x64), rounded up to 4 MiB:
# single/fewtoken 36.7 MiB, single/plain 31.9, multi/fewtoken 51.5, multi/plain 61.0; per extra
# point slot 72-112 KiB (counted as 128). Per output pixel of each returned mask the measured slope
# is 2.4 bytes (64x64 to 512x512: the arena reuses the fixed 1024x1024 upscale); counted as 8, the
# float32 masks output plus the host's copy, which dominate at large sizes.
# Keys: (flavor, attention form); "single" resizes in-graph.
COSTS: dict[tuple[str, str], PromptCost] = {
    ("single", "fewtoken"): PromptCost(fixed=40 * MiB, per_point=128 << 10, per_mask_pixel=8),
    ("single", "plain"): PromptCost(fixed=32 * MiB, per_point=128 << 10, per_mask_pixel=8),
    ("multi", "fewtoken"): PromptCost(fixed=52 * MiB, per_point=128 << 10, per_mask_pixel=0),
    ("multi", "plain"): PromptCost(fixed=64 * MiB, per_point=128 << 10, per_mask_pixel=0),
}
# Each image a multi-image call stacks (SAM 2: embedding and high-resolution features, 16 MiB).
IMAGE_BYTES = 16 * MiB
# Host resizing of the multi-image flavor works on bounded pieces (runtime.decoder.HOST_RESIZE_ELEMENTS).
POINT_SLOTS_MEASURED = 2


def prompt_cost(flavor: str, attention: str | None = None) -> PromptCost:
    """The measured cost of a prompt on a graph of this flavor ("single": in-graph resize, or
    "multi") and attention form; the largest measured one when the form is unknown."""
    known = [cost for (f, a), cost in COSTS.items() if f == flavor and (attention is None or a == attention)]
    if not known:
        known = [cost for (f, _), cost in COSTS.items() if f == flavor]
    return PromptCost(max(c.fixed for c in known), max(c.per_point for c in known), max(c.per_mask_pixel for c in known))


def estimate_call_bytes(
    *, prompts: int, points: int = POINT_SLOTS_MEASURED, orig_size: tuple[int, int] | None = None, masks: int = 3,
    images: int = 1, multi_image: bool = False, attention: str | None = None,
) -> int:
    """Estimated peak memory (bytes) of one backend call of ``prompts`` prompts of ``points`` point
    slots each; ``orig_size`` and ``masks`` (masks per prompt the graph returns) count for graphs that
    resize in-graph (``multi_image=False``); ``images`` for the multi-image flavor."""
    cost = prompt_cost("multi" if multi_image else "single", attention)
    per_prompt = cost.fixed + cost.per_point * max(0, points - POINT_SLOTS_MEASURED)
    if not multi_image and orig_size is not None:
        per_prompt += cost.per_mask_pixel * masks * orig_size[0] * orig_size[1]
    return prompts * per_prompt + (images * IMAGE_BYTES if multi_image else 0)


def prompts_per_call(
    max_call_bytes: int, *, points: int = POINT_SLOTS_MEASURED, orig_size: tuple[int, int] | None = None, masks: int = 3,
    multi_image: bool = False, attention: str | None = None,
) -> int:
    """The most prompts one call may take under ``max_call_bytes`` (each multi-image prompt counted
    with its own image, the worst case); BadInputError when not even one prompt fits."""
    one = estimate_call_bytes(prompts=1, points=points, orig_size=orig_size, masks=masks, images=1, multi_image=multi_image, attention=attention)
    if one > max_call_bytes:
        size = f" at orig_size {tuple(orig_size)}" if orig_size is not None and not multi_image else ""
        raise BadInputError(
            f"one prompt{size} needs about {one / MiB:.0f} MiB per call, above max_call_bytes {max_call_bytes / MiB:.0f} MiB; "
            f"raise max_call_bytes (Decoder.load) or ask for a smaller size"
        )
    return max_call_bytes // one
