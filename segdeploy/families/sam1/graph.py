"""The SAM 1 family's graphs: what export traces and the eager reference runs (single image with
SAM's crop-and-resize postprocessing, multi-image, the official signature), and the form AOTInductor
compiles."""

from __future__ import annotations

import torch
from torch import nn

from segdeploy import contract
from segdeploy.contract import MaskOutput
from segdeploy.forms import GraphForm
from segdeploy.model.decoder import DecoderGraph, PromptableDecoder
from segdeploy.model.resize import prepadded_size, upscale_masks, upscale_masks_compiled  # noqa: F401 - SAM's postprocessing, shared


class SamDecoderGraph(DecoderGraph):
    """The single-image graph; its in-graph postprocessing is SAM's (``upscale_masks``)."""

    def upscale(self, low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        return upscale_masks(low_res_masks, orig_im_size)


class MultiImageDecoderGraph(SamDecoderGraph):
    """The multi-image flavor: prompts on several images in one call, each prompt naming its image
    by ``image_index``; no in-graph postprocessing (original sizes differ per image)."""

    def __init__(self, decoder: PromptableDecoder, mask_output: MaskOutput, form: GraphForm = GraphForm()) -> None:
        super().__init__(decoder, mask_output, postprocess=False, form=form)

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        image_index: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        return self.decode(image_embeddings, image_index, point_coords, point_labels, mask_input, has_mask_input)


class OfficialSignatureGraph(SamDecoderGraph):
    """The official SamOnnxModel export's signature (float32 ``orig_im_size``, ``has_mask_input`` [1],
    one prompt per call), computed by our decoder: correct at every image size, since the crop size
    comes from ``orig_im_size`` at run time. ``MaskOutput.BEST`` reproduces ``return_single_mask=True``:
    token 0 when the prompt has more than 2 points (padding point included), else the best-scored
    of tokens 1..3."""

    def __init__(self, decoder: PromptableDecoder, mask_output: MaskOutput, form: GraphForm = GraphForm()) -> None:
        super().__init__(decoder, MaskOutput.ALL, postprocess=False, form=form)
        self.best = mask_output is MaskOutput.BEST

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        iou_predictions, low_res_masks = self.decode(image_embeddings, None, point_coords, point_labels, mask_input, has_mask_input)
        if self.best:  # SamOnnxModel.select_masks, written as arithmetic
            multiclick = torch.tensor([1000.0, 0.0, 0.0, 0.0], dtype=iou_predictions.dtype)
            score = iou_predictions + (point_coords.shape[1] - 2.5) * multiclick
            best = torch.argmax(score, dim=1, keepdim=True)
            iou_predictions = torch.gather(iou_predictions, 1, best)
            index = best[:, :, None, None].expand(-1, 1, low_res_masks.shape[-2], low_res_masks.shape[-1])
            low_res_masks = torch.gather(low_res_masks, 1, index)
        masks = self.upscale(low_res_masks, orig_im_size.to(torch.int64))
        return masks, iou_predictions, low_res_masks


def decoder_graph(decoder: PromptableDecoder, layout: contract.GraphLayout, form: GraphForm = GraphForm()) -> SamDecoderGraph:
    """The module whose inputs and outputs are ``layout``'s, in ``form``."""
    if layout.official:
        return OfficialSignatureGraph(decoder, layout.mask_output, form)
    if layout.multi_image:
        return MultiImageDecoderGraph(decoder, layout.mask_output, form)
    return SamDecoderGraph(decoder, layout.mask_output, layout.postprocess, form)


class CompiledSamGraph(SamDecoderGraph):
    """The single-image graph with its postprocessing written to compile (``upscale_masks_compiled``)."""

    def upscale(self, low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        return upscale_masks_compiled(low_res_masks, orig_im_size)


def compiled_graph(decoder, layout: contract.GraphLayout, form: GraphForm = GraphForm()) -> nn.Module:
    """The module to export for ``layout``: the model's own graph where nothing is data-dependent."""
    if layout.postprocess:
        return CompiledSamGraph(decoder, layout.mask_output, postprocess=True, form=form)
    return decoder_graph(decoder, layout, form)


def example_inputs(layout: contract.GraphLayout, prompts: int = 2, points: int = 3):
    """Inputs for tracing, shaped by the contract (values do not matter: nothing is data-dependent)."""
    if layout.official:
        prompts = 1
    if layout.multi_image:  # two images, so the image count is traced as a dimension, not a constant
        images = [torch.zeros((2, *contract.IMAGE_EMBEDDINGS.dims[1:])), torch.tensor([1, 0] * (prompts // 2) + [0] * (prompts % 2))]
    else:
        images = [torch.zeros(contract.IMAGE_EMBEDDINGS.dims)]
    feeds = images + [
        torch.zeros(prompts, points, 2),
        torch.ones(prompts, points),
        torch.zeros(prompts, 1, contract.LOW_RES_SIZE, contract.LOW_RES_SIZE),
        torch.zeros(prompts),
    ]
    if layout.official:  # float sizes, as the official export takes them
        feeds.append(torch.tensor([1500.0, 2250.0]))
    elif layout.postprocess:
        feeds.append(torch.tensor([contract.MODEL_INPUT_SIZE, contract.MODEL_INPUT_SIZE], dtype=torch.int64))
    return tuple(feeds)
