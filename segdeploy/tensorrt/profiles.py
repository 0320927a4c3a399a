"""Optimization profiles from the command line: prompts, points and orig_im_size ranges, validated
before any build, and expanded into per-input min/opt/max shapes (values, for the shape tensor)
from the I/O contract."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from segdeploy import contract
from segdeploy.errors import BadInputError


@dataclass(frozen=True)
class Range:
    min: int
    opt: int
    max: int

    def __iter__(self):
        yield from (self.min, self.opt, self.max)


@dataclass(frozen=True)
class SizeRange:
    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def __iter__(self):
        yield from (self.min, self.opt, self.max)


DEFAULT_PROMPTS = Range(1, 16, 64)
DEFAULT_POINTS = Range(1, 4, 16)
DEFAULT_IMAGES = Range(1, 4, 16)  # multi-image flavor: images per call
DEFAULT_ORIG_SIZE = SizeRange((16, 16), (1024, 1024), (4096, 4096))


def parse_range(text: str, option: str) -> Range:
    """'MIN:OPT:MAX' (or one number for a fixed size) -> Range, with MIN <= OPT <= MAX, all positive."""
    parts = text.split(":")
    if len(parts) == 1:
        parts = parts * 3
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise BadInputError(f"{option} takes MIN:OPT:MAX integers, got {text!r}") from None
    if len(values) != 3:
        raise BadInputError(f"{option} takes MIN:OPT:MAX, got {text!r}")
    low, opt, high = values
    if low < 1:
        raise BadInputError(f"{option}: sizes must be positive, got {text!r}")
    if not low <= opt <= high:
        raise BadInputError(f"{option}: need MIN <= OPT <= MAX, got {text!r}")
    return Range(low, opt, high)


def _parse_size(part: str, option: str, whole: str) -> tuple[int, int]:
    pieces = part.lower().split("x")
    try:
        values = [int(p) for p in pieces]
    except ValueError:
        raise BadInputError(f"{option} takes MIN:OPT:MAX sizes as N or HxW, got {whole!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise BadInputError(f"{option}: sizes must be positive N or HxW, got {whole!r}")
    return values[0], values[1]


def parse_size_range(text: str, option: str = "--orig-size") -> SizeRange:
    """'MIN:OPT:MAX' with each an N (square) or HxW -> SizeRange, ordered in both H and W."""
    parts = text.split(":")
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise BadInputError(f"{option} takes MIN:OPT:MAX, got {text!r}")
    low, opt, high = (_parse_size(p, option, text) for p in parts)
    for axis in (0, 1):
        if not low[axis] <= opt[axis] <= high[axis]:
            raise BadInputError(f"{option}: need MIN <= OPT <= MAX in height and width, got {text!r}")
    return SizeRange(low, opt, high)


@dataclass(frozen=True)
class EngineProfile:
    """One optimization profile: ranges of prompts per call, points per prompt and original size."""

    prompts: Range = DEFAULT_PROMPTS
    points: Range = DEFAULT_POINTS
    orig_size: SizeRange = DEFAULT_ORIG_SIZE
    images: Range = DEFAULT_IMAGES

    def shapes(self, layout: contract.GraphLayout) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """min/opt/max per input of ``layout``, from its family's contract dims; for orig_im_size, its values."""
        symbols = {
            contract.DimName.PROMPTS.value: self.prompts,
            contract.DimName.POINTS.value: self.points,
            contract.DimName.IMAGES.value: self.images,
        }
        result = {}
        for spec in layout.inputs():
            if spec.name == contract.ORIG_IM_SIZE.name:
                result[spec.name] = tuple(tuple(size) for size in self.orig_size)
                continue
            result[spec.name] = tuple(
                tuple(dim if isinstance(dim, int) else getattr(symbols[dim], which) for dim in spec.dims)
                for which in ("min", "opt", "max")
            )
        return result

    def to_dict(self) -> dict:
        return asdict(self)
