"""Bilinear resizes written for AOTInductor, which the families' compiled graphs use for their
in-graph postprocessing, whose data-dependent sizes (from ``orig_im_size``) must compile well.

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
