"""Prompts in the original image's pixel frame: checked, moved into the model-input frame by the
family's rules (``families/<name>/rules.py``: as its predictor does it), and packed into the
contract's feeds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segdeploy import contract
from segdeploy.contract import Label
from segdeploy.errors import BadInputError

# Labels a caller may give a point: SAM's predictor takes these (2/3 are box corners, -1 its
# padding point); -2 is the contract's ignored slot, which the runtime writes itself.
POINT_LABELS = (int(Label.PADDING), int(Label.BACKGROUND), int(Label.FOREGROUND), int(Label.BOX_TOP_LEFT), int(Label.BOX_BOTTOM_RIGHT))
EMBEDDING_SHAPE = contract.IMAGE_EMBEDDINGS.dims[1:]
LOW_RES = contract.LOW_RES_SIZE


@dataclass
class Prompt:
    """One prompt on one image, in that image's pixel frame, as ``SamPredictor.predict`` takes it.

    ``embedding``: the image's embedding, [1,256,64,64] or [256,64,64] (``get_image_embedding()``);
    for a SAM 2 decoder, the image's features (``SAM2ImagePredictor._features``: a mapping with
    ``image_embed`` and ``high_res_feats``, or the tuple image_embed, high_res_feats_0, _1);
    prompts on the same image should pass the same object, so it is sent once.
    ``orig_size``: the image's (H, W). ``point_coords`` [N,2] x,y with ``point_labels`` [N]
    (1 foreground, 0 background); ``box`` [4] x0,y0,x1,y1; ``mask_input`` [1,256,256] low-res logits.
    """

    embedding: Any
    orig_size: Sequence[int]
    point_coords: Any = None
    point_labels: Any = None
    box: Any = None
    mask_input: Any = None
    multimask_output: bool = True


@dataclass
class CheckedPrompt:
    """A prompt after checking: float32/float64 arrays in the model-input frame."""

    points: np.ndarray  # [n, 2] model-input frame, clicks then box corners (or SAM's padding point)
    labels: np.ndarray  # [n]
    mask_input: np.ndarray | None  # [1, 256, 256]
    orig_size: tuple[int, int]
    multimask_output: bool


@dataclass(frozen=True)
class PromptRules:
    """How a decoder family's predictor writes a prompt in its model-input frame."""

    to_model_frame: Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # x,y pixels -> model-input frame
    box_first: bool = False  # the box corners go before the clicks (else after them)
    always_pad: bool = False  # every prompt ends with the padding point, box or not (else only without a box)
    # (H, W) of the image in the model-input frame, where a side can shrink to nothing (aspect kept)
    resized_size: Callable[[tuple[int, int]], tuple[int, int]] | None = None


def check_orig_size(value: Any, where: str = "") -> tuple[int, int]:
    """(H, W) as two positive integers, or BadInputError."""
    try:
        array = np.asarray(value)
    except Exception:
        array = np.asarray([])
    if array.shape != (2,) or not (np.issubdtype(array.dtype, np.integer) or (np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0))):
        raise BadInputError(f"{where}orig_size must be two positive integers (H, W), got {value!r}")
    height, width = (int(v) for v in array)
    if height < 1 or width < 1:
        raise BadInputError(f"{where}orig_size must be two positive integers (H, W), got {value!r}")
    return height, width


def check_resizable(orig_size: tuple[int, int], rules: PromptRules, where: str = "") -> tuple[int, int]:
    """``orig_size``, unless the family's resize to the model input leaves a side of 0 pixels."""
    if rules.resized_size is not None and min(rules.resized_size(orig_size)) < 1:
        raise BadInputError(f"{where}orig_size {orig_size} is too elongated: its short side is 0 pixels once the long side is {contract.MODEL_INPUT_SIZE}")
    return orig_size


def _float_array(value: Any, name: str, where: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise BadInputError(f"{where}{name} is not an array ({type(exc).__name__})") from None
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise BadInputError(f"{where}{name} must hold numbers, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise BadInputError(f"{where}{name} holds NaN or inf")
    return array


def check_embedding(value: Any, where: str = "") -> np.ndarray:
    """An image embedding as a C-contiguous float32 [256,64,64] array, or BadInputError."""
    try:
        array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    except Exception as exc:
        raise BadInputError(f"{where}embedding is not an array ({type(exc).__name__})") from None
    if not np.issubdtype(array.dtype, np.floating):
        raise BadInputError(f"{where}embedding must be float16/32/64, got dtype {array.dtype}")
    if array.shape == (1, *EMBEDDING_SHAPE):
        array = array[0]
    if array.shape != EMBEDDING_SHAPE:
        raise BadInputError(f"{where}embedding must be [1,256,64,64] or [256,64,64], got {list(array.shape)}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise BadInputError(f"{where}embedding holds NaN or inf")
    return array


def check_prompt(prompt: Prompt, rules: PromptRules, where: str = "") -> CheckedPrompt:
    """Check one prompt and move it into the model-input frame as the predictor of the family whose
    ``rules`` are given does."""
    orig_size = check_resizable(check_orig_size(prompt.orig_size, where), rules, where)
    if prompt.point_coords is None and prompt.box is None:
        raise BadInputError(f"{where}a prompt needs point_coords (with point_labels) or a box")
    if (prompt.point_coords is None) != (prompt.point_labels is None):
        raise BadInputError(f"{where}point_coords and point_labels go together; got only {'point_coords' if prompt.point_labels is None else 'point_labels'}")
    points = np.zeros((0, 2))
    labels = np.zeros(0)
    if prompt.point_coords is not None:
        points = _float_array(prompt.point_coords, "point_coords", where)
        labels = _float_array(prompt.point_labels, "point_labels", where)
        if points.ndim != 2 or points.shape[1] != 2:
            raise BadInputError(f"{where}point_coords must be [N,2] (x, y), got {list(points.shape)}")
        if labels.shape != (points.shape[0],):
            raise BadInputError(f"{where}point_labels must be [N] with N = {points.shape[0]} points, got {list(labels.shape)}")
        bad = sorted(set(labels.tolist()) - set(POINT_LABELS))
        if bad:
            raise BadInputError(f"{where}point_labels holds {bad[:5]}; valid labels are 1 (foreground), 0 (background), and SAM's -1, 2, 3")
        points = rules.to_model_frame(points, orig_size)
    if prompt.box is not None:
        box = _float_array(prompt.box, "box", where)
        if box.size != 4 or box.ndim > 2 or (box.ndim == 2 and box.shape[0] != 1):
            raise BadInputError(f"{where}box must be four numbers x0, y0, x1, y1, got shape {list(box.shape)}")
        x0, y0, x1, y1 = box.reshape(4).tolist()
        if x0 > x1 or y0 > y1:
            raise BadInputError(f"{where}box must have x0 <= x1 and y0 <= y1, got {[x0, y0, x1, y1]}")
        corners = rules.to_model_frame(np.array([[x0, y0], [x1, y1]]), orig_size)
        box_labels = [Label.BOX_TOP_LEFT, Label.BOX_BOTTOM_RIGHT]
        points = np.concatenate([corners, points] if rules.box_first else [points, corners])
        labels = np.concatenate([box_labels, labels] if rules.box_first else [labels, box_labels])
    if prompt.box is None or rules.always_pad:  # SAM pads point prompts with one (0, 0) point labelled -1 when there is no box
        points = np.concatenate([points, np.zeros((1, 2))])
        labels = np.concatenate([labels, [Label.PADDING]])
    mask = None
    if prompt.mask_input is not None:
        mask = _float_array(prompt.mask_input, "mask_input", where)
        if mask.size != LOW_RES * LOW_RES or mask.shape[-2:] != (LOW_RES, LOW_RES) or mask.ndim > 4:
            raise BadInputError(f"{where}mask_input must be [1,256,256] low-res logits, got {list(mask.shape)}")
        mask = mask.reshape(1, LOW_RES, LOW_RES)
    return CheckedPrompt(points, labels, mask, orig_size, bool(prompt.multimask_output))


def pack_prompts(prompts: Sequence[CheckedPrompt]) -> dict[str, np.ndarray]:
    """Point, label and mask feeds of a batch: shorter prompts filled with ignored (-2) slots."""
    count = len(prompts)
    width = max(len(p.labels) for p in prompts)
    coords = np.zeros((count, width, 2), np.float32)
    labels = np.full((count, width), float(Label.IGNORED), np.float32)
    masks = np.zeros((count, 1, LOW_RES, LOW_RES), np.float32)
    has_mask = np.zeros(count, np.float32)
    for b, prompt in enumerate(prompts):
        coords[b, : len(prompt.labels)] = prompt.points
        labels[b, : len(prompt.labels)] = prompt.labels
        if prompt.mask_input is not None:
            masks[b] = prompt.mask_input
            has_mask[b] = 1.0
    return {
        contract.POINT_COORDS.name: coords,
        contract.POINT_LABELS.name: labels,
        contract.MASK_INPUT.name: masks,
        contract.HAS_MASK_INPUT.name: has_mask,
    }


def resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 [..., h, w] -> [..., H, W] as torch's ``F.interpolate(mode="bilinear", align_corners=False)``
    (no antialias) computes it, in numpy: the families' host-side mask resize without PyTorch."""
    array = np.asarray(array, dtype=np.float32)
    height, width = (int(n) for n in size)
    rows0, rows1, row_weight = _bilinear_taps(array.shape[-2], height)
    cols0, cols1, col_weight = _bilinear_taps(array.shape[-1], width)
    # columns first, on the few input rows; then whole output rows, which numpy copies contiguously
    part = np.take(array, cols0, axis=-1) * (1 - col_weight) + np.take(array, cols1, axis=-1) * col_weight
    rows = row_weight[:, None]
    out = np.take(part, rows0, axis=-2)
    out *= 1 - rows
    out += np.take(part, rows1, axis=-2) * rows
    return out


def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's source indices and weights along one axis (area_pixel_compute_source_index)."""
    scale = np.float64(np.float32(size_in) / np.float32(size_out))  # float32, then scale*(i+0.5)-0.5 rounded once (torch's fused multiply-add)
    source = np.maximum(scale * (np.arange(size_out, dtype=np.float64) + 0.5) - 0.5, 0.0).astype(np.float32)
    first = source.astype(np.int64)
    second = np.minimum(first + 1, size_in - 1)
    return first, second, (source - first).astype(np.float32)


# --- SAM's longest-side frame (segment-anything's ResizeLongestSide and Sam.postprocess_masks), shared by
# every family whose predictor is SamPredictor's ---


def preprocess_shape(orig_size: tuple[int, int], side: int = contract.MODEL_INPUT_SIZE) -> tuple[int, int]:
    """(H, W) after the longest-side resize, with SAM's own float arithmetic."""
    height, width = orig_size
    scale = side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def to_longest_side_frame(coords: np.ndarray, orig_size: tuple[int, int]) -> np.ndarray:
    """x,y pixels of the original image -> the model-input frame (``ResizeLongestSide.apply_coords``)."""
    new_height, new_width = preprocess_shape(orig_size)
    out = np.array(coords, dtype=np.float64)
    out[..., 0] *= new_width / orig_size[1]
    out[..., 1] *= new_height / orig_size[0]
    return out


# SamPredictor's rules: ResizeLongestSide coordinates, clicks then box corners, padding only without a box.
LONGEST_SIDE_RULES = PromptRules(to_model_frame=to_longest_side_frame, resized_size=preprocess_shape)


def upscale_longest_side(low_res: np.ndarray, orig_size: tuple[int, int]) -> np.ndarray:
    """Logits [B,M,256,256] -> [B,M,H,W]: bilinear to the 1024 frame, crop the padding, bilinear
    to the original size, as SAM does. Only the low-res rows and columns that reach the kept part
    are upsampled: with the scale exactly 4, the kept pixels are the same (tested against SAM). numpy
    (``resize_bilinear``, torch's bilinear): serving needs no PyTorch."""
    side = contract.MODEL_INPUT_SIZE
    factor = side // low_res.shape[-1]
    new_height, new_width = preprocess_shape(orig_size)
    rows = min(new_height // factor + 2, low_res.shape[-2])
    cols = min(new_width // factor + 2, low_res.shape[-1])
    masks = resize_bilinear(low_res[..., :rows, :cols], (rows * factor, cols * factor))[..., :new_height, :new_width]
    if (new_height, new_width) != tuple(orig_size):  # a resize to the same size is the identity: skipped
        masks = resize_bilinear(masks, tuple(orig_size))
    return np.ascontiguousarray(masks)
