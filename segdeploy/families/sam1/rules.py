"""SAM 1's pre- and postprocessing, as segment-anything's ``SamPredictor`` does them, for the runtime:

- coordinates: ``ResizeLongestSide.apply_coords`` (longest side to 1024, aspect kept, float sizes);
- prompts: clicks, then box corners; SAM's padding point (0,0) labelled -1 only without a box;
- masks (graphs that return only low-res logits: the multi-image flavor, ``--no-postprocess``):
  ``Sam.postprocess_masks``, with its float longest-side sizes;
- single mask: token 0.
"""

from __future__ import annotations

import numpy as np

from segdeploy import contract
from segdeploy.prompts import PromptRules, resize_bilinear


def preprocess_shape(orig_size: tuple[int, int], side: int = contract.MODEL_INPUT_SIZE) -> tuple[int, int]:
    """(H, W) after the longest-side resize, with SAM's own float arithmetic."""
    height, width = orig_size
    scale = side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def to_model_frame(coords: np.ndarray, orig_size: tuple[int, int]) -> np.ndarray:
    """x,y pixels of the original image -> the model-input frame (``ResizeLongestSide.apply_coords``)."""
    new_height, new_width = preprocess_shape(orig_size)
    out = np.array(coords, dtype=np.float64)
    out[..., 0] *= new_width / orig_size[1]
    out[..., 1] *= new_height / orig_size[0]
    return out


PROMPT_RULES = PromptRules(to_model_frame=to_model_frame, resized_size=preprocess_shape)


def upscale_to_original(low_res: np.ndarray, orig_size: tuple[int, int]) -> np.ndarray:
    """Logits [B,M,256,256] -> [B,M,H,W]: bilinear to the 1024 frame, crop the padding, bilinear
    to the original size, as SAM does. Only the low-res rows and columns that reach the kept part
    are upsampled: with the scale exactly 4, the kept pixels are the same (tested against SAM). numpy
    (prompts.resize_bilinear, torch's bilinear): serving needs no PyTorch."""
    side = contract.MODEL_INPUT_SIZE
    factor = side // low_res.shape[-1]
    new_height, new_width = preprocess_shape(orig_size)
    rows = min(new_height // factor + 2, low_res.shape[-2])
    cols = min(new_width // factor + 2, low_res.shape[-1])
    masks = resize_bilinear(low_res[..., :rows, :cols], (rows * factor, cols * factor))[..., :new_height, :new_width]
    if (new_height, new_width) != tuple(orig_size):  # a resize to the same size is the identity: skipped
        masks = resize_bilinear(masks, tuple(orig_size))
    return np.ascontiguousarray(masks)
