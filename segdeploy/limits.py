"""Bounds on what one request may ask for, checked before anything is allocated for it: the output
size (each mask is H x W of the original image), prompts per batch and point slots per prompt."""

from __future__ import annotations

from dataclasses import dataclass

from segdeploy.errors import BadInputError

# 8192 x 8192: a 64-megapixel photo; 3 masks of it are 0.2 GB as bool, 0.8 GB as float logits.
MAX_OUTPUT_PIXELS = 8192 * 8192
MAX_OUTPUT_SIDE = 16384
MAX_PROMPTS = 4096  # per predict_batch (calls are split under the memory budget; this bounds the results)
MAX_POINTS = 64  # point slots per prompt, box corners and SAM's padding point included
MAX_THREADS = 1024  # onnxruntime and torch threads
MAX_CASES = 10000  # verify cases (each runs the graph and the eager model)
MAX_RUNS = 100000  # timed (or warm-up) calls per bench cell
# A bench call is one batch of --prompts, not split as Decoder and serve split theirs: refuse a sweep
# whose largest call's estimated peak exceeds this (the default sweep's, 64 prompts at 1024x1024, is ~4 GiB).
DEFAULT_BENCH_CALL_BYTES = 8 << 30
MAX_SEED = 2**63 - 1  # seeds (random weights, case draws) are 0..MAX_SEED: torch's and numpy's common range


def check_seed(seed: object, what: str = "seed") -> int:
    """A seed as an int in 0..MAX_SEED, or BadInputError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise BadInputError(f"{what} must be an integer from 0 to 2**63-1, got {seed!r}")
    return seed


@dataclass(frozen=True)
class RequestLimits:
    """What ``Decoder.predict_batch`` (and ``bench``) accepts; raise them knowingly."""

    max_output_pixels: int = MAX_OUTPUT_PIXELS
    max_output_side: int = MAX_OUTPUT_SIDE
    max_prompts: int = MAX_PROMPTS
    max_points: int = MAX_POINTS

    def __post_init__(self) -> None:
        for name in ("max_output_pixels", "max_output_side", "max_prompts", "max_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"RequestLimits.{name} must be a positive integer, got {value!r}")

    def check_output_size(self, orig_size: tuple[int, int], where: str = "") -> None:
        height, width = orig_size
        if max(height, width) > self.max_output_side or height * width > self.max_output_pixels:
            raise BadInputError(
                f"{where}orig_size {height}x{width} is above the output limit ({self.max_output_side} pixels a side, "
                f"{self.max_output_pixels / 1e6:.0f} megapixels); raise RequestLimits(max_output_side=..., max_output_pixels=...) to allow it"
            )

    def check_prompts(self, count: int) -> None:
        if count > self.max_prompts:
            raise BadInputError(f"more than {self.max_prompts} prompts in one batch; split it, or raise RequestLimits(max_prompts=...)")

    def check_points(self, count: int, where: str = "") -> None:
        if count > self.max_points:
            raise BadInputError(
                f"{where}{count} point slots (clicks, box corners, padding) in one prompt, above the limit of {self.max_points}; "
                f"raise RequestLimits(max_points=...) to allow it"
            )
