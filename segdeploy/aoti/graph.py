"""The module torch.export traces for AOTInductor: the contract's decoder graph, with the in-graph
postprocessing written so that its data-dependent sizes (from ``orig_im_size``) compile well.

Two things differ from the model's own ``upscale_masks``, not its function:
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
from torch import nn

from segdeploy import contract
from segdeploy.forms import GraphForm
from segdeploy.model import DecoderGraph, decoder_graph
from segdeploy.model.sam_decoder import prepadded_size


def _source(in_size: int, out_size: int, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weight of the first ``count`` outputs of a bilinear resize
    (align_corners=False) from ``in_size`` to ``out_size`` along one axis, as torch computes them."""
    scale = in_size / out_size
    x = ((torch.arange(count, device=device).to(torch.float32) + 0.5) * scale - 0.5).clamp(min=0.0)
    low = x.to(torch.int64)
    high = (low + 1).clamp(max=in_size - 1)
    return low, high, (x - low).clamp(0.0, 1.0)


def _resize_axis(x: torch.Tensor, axis: int, out_size: int, count: int) -> torch.Tensor:
    """The first ``count`` outputs of a bilinear resize of ``x`` to ``out_size`` along ``axis``."""
    low, high, weight = _source(x.shape[axis], out_size, count, x.device)
    first, second = x.index_select(axis, low), x.index_select(axis, high)
    return first + (second - first) * (weight[:, None] if axis == -2 else weight)


def upscale_masks_compiled(low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
    """segdeploy.model.sam_decoder.upscale_masks, written to compile (see the module docstring):
    the x4 upsample, crop and resize to (H, W) along H, then the same along W."""
    side = contract.MODEL_INPUT_SIZE
    factor = side // low_res_masks.shape[-1]
    new_height, new_width = prepadded_size(orig_im_size, side)
    rows = torch.clamp(new_height // factor + 2, max=low_res_masks.shape[-2]).item()  # .item(): a size, not a constant
    cols = torch.clamp(new_width // factor + 2, max=low_res_masks.shape[-1]).item()
    masks = low_res_masks.narrow(-2, 0, rows).narrow(-1, 0, cols)
    # new side <= min(side // 4 + 2, 256) * 4: each crop keeps outputs of the upsample
    masks = _resize_axis(masks, -2, rows * factor, new_height.item())
    masks = _resize_axis(masks, -2, orig_im_size[0].item(), orig_im_size[0].item())
    masks = _resize_axis(masks, -1, cols * factor, new_width.item())
    return _resize_axis(masks, -1, orig_im_size[1].item(), orig_im_size[1].item())


def resize_straight_compiled(low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(masks, size=orig_im_size, mode="bilinear")`` (SAM 2's straight resize), written
    to compile: along H, then along W."""
    height, width = orig_im_size[0].item(), orig_im_size[1].item()
    return _resize_axis(_resize_axis(low_res_masks, -2, height, height), -1, width, width)


class CompiledDecoderGraph(DecoderGraph):
    """The single-image graph with its postprocessing written to compile (``upscale_masks_compiled``)."""

    def upscale(self, low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        return upscale_masks_compiled(low_res_masks, orig_im_size)


def compiled_graph(decoder, layout: contract.GraphLayout, form: GraphForm = GraphForm()) -> nn.Module:
    """The module to export for ``layout``: the model's own graph where nothing is data-dependent."""
    if layout.postprocess:
        return CompiledDecoderGraph(decoder, layout.mask_output, postprocess=True, form=form)
    return decoder_graph(decoder, layout, form)
