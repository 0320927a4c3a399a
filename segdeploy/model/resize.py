"""Bilinear resizes: SAM's crop-and-resize postprocessing (``upscale_masks``, shared by every family
whose predictor is SAM's), and the forms written for AOTInductor, which the families' compiled graphs
use for their in-graph postprocessing, whose data-dependent sizes (from ``orig_im_size``) must
compile well.

Two things differ from a plain ``F.interpolate`` with sliced crops, not its function:
- Inductor cannot compile a slice ``x[..., :n]`` whose end comes from a tensor's value (its C++
  wrapper writes the missing start as ``None``); the crops are ``narrow`` with the same lengths;
- Inductor decomposes a bilinear resize into a 4-point gather per output pixel, which compiles to
  slow scalar code when the sizes are data-dependent (~30 ms for 3 masks at 1024x1024 on 2 cores,
  against ~4 ms eager in the whole model). Bilinear resizing is separable, so here the upsample,
  the crop and the resize run along H (gathering whole rows) and then along W, with torch's source
  indices and weights.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from segdeploy import contract


def _source(in_size: int, out_size: int, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weight of the first ``count`` outputs of a bilinear resize
    (align_corners=False) from ``in_size`` to ``out_size`` along one axis, as torch computes them."""
    scale = in_size / out_size
    x = ((torch.arange(count, device=device).to(torch.float32) + 0.5) * scale - 0.5).clamp(min=0.0)
    low = x.to(torch.int64)
    high = (low + 1).clamp(max=in_size - 1)
    return low, high, (x - low).clamp(0.0, 1.0)


def resize_axis(x: torch.Tensor, axis: int, out_size: int, count: int) -> torch.Tensor:
    """The first ``count`` outputs of a bilinear resize of ``x`` to ``out_size`` along ``axis``."""
    low, high, weight = _source(x.shape[axis], out_size, count, x.device)
    first, second = x.index_select(axis, low), x.index_select(axis, high)
    return first + (second - first) * (weight[:, None] if axis == -2 else weight)


def resize_straight_compiled(low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(masks, size=orig_im_size, mode="bilinear")`` (SAM 2's straight resize), written
    to compile: along H, then along W."""
    height, width = orig_im_size[0].item(), orig_im_size[1].item()
    return resize_axis(resize_axis(low_res_masks, -2, height, height), -1, width, width)


def upscale_masks(low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
    """SAM's postprocessing: bilinear to the model-input frame, crop the padding, bilinear to (H, W).

    The padding is mostly cropped before the first upsampling: only low-res rows (columns) up to
    ceil(h'/4) + 1 reach the kept part of the x4 upsample, and with the scale still exactly 4 the
    kept pixels are the same; the second crop then trims a few rows and columns.
    """
    side = contract.MODEL_INPUT_SIZE
    factor = side // low_res_masks.shape[-1]
    new_height, new_width = prepadded_size(orig_im_size, side)
    rows = torch.clamp(new_height // factor + 2, max=low_res_masks.shape[-2])
    cols = torch.clamp(new_width // factor + 2, max=low_res_masks.shape[-1])
    masks = low_res_masks[..., :rows, :cols]
    masks = F.interpolate(masks, size=(rows * factor, cols * factor), mode="bilinear", align_corners=False)
    masks = masks[..., :new_height, :new_width]
    return F.interpolate(masks, size=(orig_im_size[0], orig_im_size[1]), mode="bilinear", align_corners=False)


def prepadded_size(orig_im_size: torch.Tensor, longest_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) after SAM's longest-side resize, as floor(side * L / max(H, W) + 0.5) in integers."""
    height, width = orig_im_size[0], orig_im_size[1]
    longest = torch.maximum(height, width)
    new_height = torch.div(height * longest_side + longest // 2, longest, rounding_mode="floor")
    new_width = torch.div(width * longest_side + longest // 2, longest, rounding_mode="floor")
    return new_height, new_width


def upscale_masks_compiled(low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
    """``upscale_masks``, written to compile (see the module docstring):
    the x4 upsample, crop and resize to (H, W) along H, then the same along W."""
    side = contract.MODEL_INPUT_SIZE
    factor = side // low_res_masks.shape[-1]
    new_height, new_width = prepadded_size(orig_im_size, side)
    rows = torch.clamp(new_height // factor + 2, max=low_res_masks.shape[-2]).item()  # .item(): a size, not a constant
    cols = torch.clamp(new_width // factor + 2, max=low_res_masks.shape[-1]).item()
    masks = low_res_masks.narrow(-2, 0, rows).narrow(-1, 0, cols)
    # new side <= min(side // 4 + 2, 256) * 4: each crop keeps outputs of the upsample
    masks = resize_axis(masks, -2, rows * factor, new_height.item())
    masks = resize_axis(masks, -2, orig_im_size[0].item(), orig_im_size[0].item())
    masks = resize_axis(masks, -1, cols * factor, new_width.item())
    return resize_axis(masks, -1, orig_im_size[1].item(), orig_im_size[1].item())
