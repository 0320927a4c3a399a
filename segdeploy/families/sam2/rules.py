"""SAM 2's pre- and postprocessing, as ``SAM2Transforms`` and ``SAM2ImagePredictor`` do them, for the
runtime (numpy only).

- Coordinates: x*1024/W, y*1024/H (the image is resized to a 1024x1024 square, no padding).
- Prompts: box corners first, then clicks, then the padding point, always.
- Masks: low-res logits resized straight to the original size (bilinear, no crop).
- Single mask: token 0 unless its stability score is below 0.98, then the best-scored of tokens 1..3.
- The returned low-res logits are clamped to [-32, 32] (the full-size masks come from unclamped ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from segdeploy import contract
from segdeploy.errors import BadInputError
from segdeploy.families.sam2 import contract as sam2_contract
from segdeploy.prompts import PromptRules, check_embedding, resize_bilinear

SIDE = contract.MODEL_INPUT_SIZE


def to_square_frame(coords: np.ndarray, orig_size: tuple[int, int]) -> np.ndarray:
    """x,y pixels of the original image -> the 1024x1024 square (``SAM2Transforms.transform_coords``)."""
    out = np.array(coords, dtype=np.float64)
    out[..., 0] = out[..., 0] / orig_size[1] * SIDE
    out[..., 1] = out[..., 1] / orig_size[0] * SIDE
    return out


PROMPT_RULES = PromptRules(to_model_frame=to_square_frame, box_first=True, always_pad=True)


def check_features(value: Any, where: str = "") -> dict[str, np.ndarray]:
    """One image's features, as ``SAM2ImagePredictor._features`` holds them (a mapping with
    ``image_embed`` and ``high_res_feats``) or as a sequence (image_embed, high_res_feats_0,
    high_res_feats_1); each with or without its leading 1. Returns C-contiguous float32 arrays by
    input name, without the leading dimension."""
    if isinstance(value, Mapping) and set(value) == set(sam2_contract.IMAGE_INPUTS):  # by input name
        parts = [value[name] for name in sam2_contract.IMAGE_INPUTS]
    elif isinstance(value, Mapping):
        if "image_embed" not in value or "high_res_feats" not in value:
            raise BadInputError(f"{where}SAM 2 features are a mapping with image_embed and high_res_feats (SAM2ImagePredictor._features), got keys {sorted(value)[:4]}")
        parts = [value["image_embed"], *value["high_res_feats"]]
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 3:
        parts = list(value)
    else:
        raise BadInputError(f"{where}a SAM 2 decoder takes the image's features: {{'image_embed': ..., 'high_res_feats': [s0, s1]}} or (image_embed, s0, s1)")
    if len(parts) != 3:
        raise BadInputError(f"{where}high_res_feats must hold two maps, got {len(parts) - 1}")
    arrays = {contract.IMAGE_EMBEDDINGS.name: check_embedding(parts[0], where)}
    for spec, part in zip((sam2_contract.HIGH_RES_FEATS_0, sam2_contract.HIGH_RES_FEATS_1), parts[1:]):
        arrays[spec.name] = _check_map(part, spec, where)
    return arrays


def _check_map(value: Any, spec: contract.TensorSpec, where: str) -> np.ndarray:
    try:
        array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    except Exception as exc:
        raise BadInputError(f"{where}{spec.name} is not an array ({type(exc).__name__})") from None
    shape = tuple(spec.dims[1:])
    if array.shape == (1, *shape):
        array = array[0]
    if array.shape != shape or not np.issubdtype(array.dtype, np.floating):
        raise BadInputError(f"{where}{spec.name} must be float [1,{','.join(map(str, shape))}], got {array.dtype} {list(array.shape)}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise BadInputError(f"{where}{spec.name} holds NaN or inf")
    return array


def upscale_to_original(low_res: np.ndarray, orig_size: tuple[int, int]) -> np.ndarray:
    """Logits [B,M,256,256] -> [B,M,H,W], bilinear straight to the original size (``postprocess_masks``)."""
    return resize_bilinear(low_res, tuple(orig_size))


def single_column(low_res: np.ndarray, iou: np.ndarray) -> int:
    """Which of tokens 0..3 (low_res [4,h,w], iou [4]) is SAM2ImagePredictor's single mask."""
    token0 = low_res[0]
    outer = int((token0 > -sam2_contract.STABILITY_DELTA).sum())
    stability = int((token0 > sam2_contract.STABILITY_DELTA).sum()) / outer if outer else 1.0
    return 0 if stability >= sam2_contract.STABILITY_THRESH else 1 + int(np.argmax(iou[1:]))
