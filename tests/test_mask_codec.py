"""COCO RLE masks: exact round trips, the compressed size, and refusals of malformed input."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from segdeploy.errors import BadInputError, MissingDependencyError
from segdeploy.serving.mask_codec import decode_rle, encode_rle, rles_from_json, rles_to_json


def blobs(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Smooth random blobs [count, H, W]: a coarse Gaussian grid upsampled bilinearly, thresholded."""

    def upsample(n: int, cells: int) -> np.ndarray:
        x = np.linspace(0, cells - 1, n)
        left = np.minimum(x.astype(int), cells - 2)
        weights = np.zeros((n, cells))
        weights[np.arange(n), left] = 1 - (x - left)
        weights[np.arange(n), left + 1] = x - left
        return weights

    cells = (max(2, height * 6 // max(height, width) + 2), max(2, width * 6 // max(height, width) + 2))
    grid = rng.standard_normal((count, *cells))
    return upsample(height, cells[0]) @ grid @ upsample(width, cells[1]).T > 0.3


def runs_column_major(mask: np.ndarray) -> list[int]:
    """COCO's runs, computed independently: column-major, starting with a (possibly empty) run of zeros."""
    flat = mask.T.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


@pytest.mark.parametrize("height,width", [(17, 23), (1, 1), (5, 1), (256, 256), (1080, 1920)])
def test_round_trip_of_blobs(rng, height, width):
    masks = blobs(rng, 3, height, width)
    rles = encode_rle(masks)
    assert [rle["size"] for rle in rles] == [[height, width]] * 3
    assert all(isinstance(rle["counts"], str) for rle in rles)
    np.testing.assert_array_equal(decode_rle(rles), masks)
    np.testing.assert_array_equal(decode_rle(rles_from_json(rles_to_json(rles))), masks)
    assert decode_rle(rles).dtype == bool


def test_runs_are_cocos(rng):
    """Our check of a counts string reads pycocotools' runs back (column-major, zeros first)."""
    from pycocotools import mask as mask_api

    from segdeploy.serving.mask_codec import _run_lengths

    masks = blobs(rng, 4, 31, 47)
    masks[0, 0, 0] = True  # a mask that starts with a one
    for mask, rle in zip(masks, encode_rle(masks)):
        assert _run_lengths(rle["counts"].encode()) == runs_column_major(mask)
    assert mask_api.area([{"size": rle["size"], "counts": rle["counts"].encode()} for rle in encode_rle(masks)]).tolist() == masks.sum((1, 2)).tolist()


@pytest.mark.parametrize("value", [False, True])
def test_empty_and_full_masks(value):
    masks = np.full((2, 1080, 1920), value)
    rles = encode_rle(masks)
    assert all(len(rle["counts"]) < 16 for rle in rles)
    np.testing.assert_array_equal(decode_rle(rles), masks)


def test_single_mask_and_no_masks(rng):
    mask = blobs(rng, 1, 17, 23)[0]
    np.testing.assert_array_equal(decode_rle(encode_rle(mask)), mask[None])
    np.testing.assert_array_equal(decode_rle(encode_rle(mask.astype(np.uint8))), mask[None])
    assert encode_rle(np.zeros((0, 4, 5), bool)) == []
    assert decode_rle([]).shape == (0, 0, 0)


def test_json_is_far_smaller_than_raw(rng):
    mask = blobs(rng, 1, 1080, 1920)
    assert mask.any() and not mask.all()
    data = rles_to_json(encode_rle(mask))
    assert len(data) < 64 * 1024 and mask.nbytes == 1080 * 1920  # 2 MB raw
    assert rles_from_json(data.decode()) == encode_rle(mask)


def test_refusals():
    with pytest.raises(BadInputError, match="must be bool.*logits > 0"):
        encode_rle(np.zeros((2, 3), np.float32))
    with pytest.raises(BadInputError, match=r"\[M, H, W\] or \[H, W\]"):
        encode_rle(np.zeros((1, 2, 3, 4), bool))
    two_by_two = encode_rle(np.eye(2, dtype=bool))[0]
    for bad in [
        {**two_by_two, "size": [3, 3]},  # runs for 4 pixels, not 9: pycocotools alone would return garbage
        {**two_by_two, "counts": two_by_two["counts"] + "1"},
        {"size": [2, 2], "counts": "\x7f"},
        {"size": [1, 1], "counts": "1\u00e9"},  # not ASCII
        {"size": [2, 2], "counts": "o"},  # a dangling continuation
        {"size": [2], "counts": "4"},
        {"size": [2, True], "counts": "4"},
        {"size": [2, 2], "counts": [4]},
        "4",
    ]:
        with pytest.raises(BadInputError, match="RLE 0 is not COCO compressed RLE"):
            decode_rle([bad])
    with pytest.raises(BadInputError, match="share one size"):
        decode_rle(encode_rle(np.zeros((2, 3), bool)) + encode_rle(np.zeros((3, 2), bool)))
    with pytest.raises(BadInputError, match="not valid JSON"):
        rles_from_json(b"[{")
    with pytest.raises(BadInputError, match="must be a list"):
        rles_from_json(b"{}")
    with pytest.raises(BadInputError, match="RLE 1 is not"):
        rles_from_json(b'[{"size": [1, 1], "counts": "01"}, {"size": [1, 1]}]')


def test_missing_pycocotools(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(MissingDependencyError, match=r"pycocotools: pip install 'segdeploy\[serve\]'"):
        encode_rle(np.zeros((2, 3), bool))
