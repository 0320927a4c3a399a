"""Compact masks for responses: COCO's compressed RLE (pycocotools), and its JSON form.

A 1080x1920 mask is 2 MB as raw bytes and a few KB as RLE. pycocotools is imported lazily.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from segdeploy.errors import BadInputError, MissingDependencyError

RLE = dict[str, Any]  # {"size": [H, W], "counts": str}, COCO's compressed (column-major) form


def encode_rle(masks: np.ndarray) -> list[RLE]:
    """One RLE per mask of a bool (or 0/1 integer) array [M, H, W] or [H, W]."""
    masks = np.asarray(masks)
    if masks.dtype.kind not in "biu":
        raise BadInputError(f"masks to encode must be bool, got {masks.dtype}; threshold the logits first (logits > 0)")
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise BadInputError(f"masks to encode must be [M, H, W] or [H, W], got shape {list(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    fortran = np.asfortranarray((masks != 0).transpose(1, 2, 0), dtype=np.uint8)
    encoded = _mask_api().encode(fortran)
    return [{"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded]


def decode_rle(rles: list[RLE], *, check: bool = True) -> np.ndarray:
    """The bool masks [M, H, W] of RLEs that share one size ([0, 0, 0] for no RLEs). ``check=False``
    trusts their runs (what a segdeploy server wrote): the check is Python, ~1 s for a noisy 1080p mask."""
    if not rles:
        return np.zeros((0, 0, 0), dtype=bool)
    checked = [_checked(rle, index) if check else _as_coco(rle) for index, rle in enumerate(rles)]
    sizes = {tuple(rle["size"]) for rle in checked}
    if len(sizes) > 1:
        raise BadInputError(f"RLEs decoded together must share one size, got {sorted(sizes)}")
    decoded = _mask_api().decode(checked)
    return np.ascontiguousarray(decoded.transpose(2, 0, 1), dtype=bool)


def rles_to_json(rles: list[RLE]) -> bytes:
    """RLEs as compact UTF-8 JSON (a list of {"size", "counts"})."""
    return json.dumps(rles, separators=(",", ":")).encode()


def rles_from_json(data: bytes | str, *, check: bool = True) -> list[RLE]:
    """RLEs back from rles_to_json's bytes, checked (``check=False``: only parsed)."""
    try:
        rles = json.loads(data)
    except ValueError as error:
        raise BadInputError(f"masks are not valid JSON ({error}); send what rles_to_json wrote") from None
    if not isinstance(rles, list):
        raise BadInputError(f"masks JSON must be a list of RLEs, got {type(rles).__name__}")
    if check:
        for index, rle in enumerate(rles):
            _checked(rle, index)
    return rles


def _as_coco(rle: RLE) -> RLE:
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]}


def _checked(rle: Any, index: int) -> RLE:
    """pycocotools' form of one RLE, after checking its runs cover exactly H*W pixels."""
    bad = f"RLE {index} is not COCO compressed RLE"
    if not isinstance(rle, dict) or not isinstance(rle.get("counts"), (str, bytes)):
        raise BadInputError(f"{bad}: expected {{'size': [H, W], 'counts': str}}")
    size = rle.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_count(n) for n in size)):
        raise BadInputError(f"{bad}: 'size' must be [H, W] with H, W >= 0, got {size!r}")
    counts = rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]  # non-ASCII: bytes >= 0x80, refused
    runs = _run_lengths(counts)
    if runs is None or any(run < 0 for run in runs) or sum(runs) != size[0] * size[1]:
        raise BadInputError(f"{bad}: its counts do not cover the {size[0]}x{size[1]} pixels of its size")
    return {"size": [int(n) for n in size], "counts": counts}


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


def _run_lengths(counts: bytes) -> list[int] | None:
    """The run lengths in a compressed RLE string (pycocotools' rleFrString in Python), None if malformed."""
    runs: list[int] = []
    value = shift = 0
    for char in counts:
        code = char - 48
        if not 0 <= code < 64 or shift > 25:
            return None
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value = shift = 0
    return None if shift else runs


def _mask_api():
    try:
        from pycocotools import mask
    except ImportError:
        raise MissingDependencyError("compact masks (COCO RLE) need pycocotools: pip install 'segdeploy[serve]'") from None
    return mask
