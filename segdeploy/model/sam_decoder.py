"""The deployable decoder: SAM's prompt encoder + mask decoder, and the graph wrapper that export
traces (prompt labels to tokens, ignored-slot masking, in-graph postprocessing)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from segdeploy import contract
from segdeploy.contract import MaskOutput
from segdeploy.forms import AttentionForm, GraphForm, Precision, UpscaleForm
from segdeploy.model.common import LayerNorm, LayerNorm2d
from segdeploy.model.mask_decoder import MaskDecoder
from segdeploy.model.prompt_encoder import IGNORED_SLOT_LOGIT, PromptEncoder
from segdeploy.model.transformer import TwoWayTransformer


@dataclass(frozen=True)
class DecoderConfig:
    """Hyperparameters of a SAM-style decoder."""

    embed_dim: int = contract.EMBED_DIM
    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    mask_in_chans: int = 16


VARIANTS: dict[str, DecoderConfig] = {name: DecoderConfig() for name in contract.VARIANT_NAMES}
DEFAULT_VARIANT = contract.DEFAULT_VARIANT


class SamDecoder(nn.Module):
    """Holds ``prompt_encoder`` and ``mask_decoder`` under the official checkpoints' key names."""

    def __init__(self, config: DecoderConfig = DecoderConfig()) -> None:
        super().__init__()
        self.config = config
        grid = (contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE)
        self.prompt_encoder = PromptEncoder(
            embed_dim=config.embed_dim,
            image_embedding_size=grid,
            input_image_size=(contract.MODEL_INPUT_SIZE, contract.MODEL_INPUT_SIZE),
            mask_in_chans=config.mask_in_chans,
        )
        transformer = TwoWayTransformer(
            depth=config.depth,
            embedding_dim=config.embed_dim,
            num_heads=config.num_heads,
            mlp_dim=config.mlp_dim,
            attention_downsample_rate=config.attention_downsample_rate,
        )
        self.mask_decoder = self.build_mask_decoder(config, transformer)

    def build_mask_decoder(self, config: DecoderConfig, transformer: TwoWayTransformer) -> MaskDecoder:
        """The family's mask decoder around the two-way transformer (SAM 2 overrides it)."""
        return MaskDecoder(transformer_dim=config.embed_dim, transformer=transformer, num_multimask_outputs=config.num_multimask_outputs)


def prepadded_size(orig_im_size: torch.Tensor, longest_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) after SAM's longest-side resize, as floor(side * L / max(H, W) + 0.5) in integers."""
    height, width = orig_im_size[0], orig_im_size[1]
    longest = torch.maximum(height, width)
    new_height = torch.div(height * longest_side + longest // 2, longest, rounding_mode="floor")
    new_width = torch.div(width * longest_side + longest // 2, longest, rounding_mode="floor")
    return new_height, new_width


TORCH_DTYPES = {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}


def cast_decoder(decoder: SamDecoder, dtype: torch.dtype) -> SamDecoder:
    """A copy whose mask decoder computes in ``dtype``, by the precision policy: matrix work and
    element-wise ops in the low type; LayerNorms (and softmax, see attention) in fp32; the prompt
    encoder (positional encoding of coordinates, a small share of the work) in fp32."""
    low = copy.deepcopy(decoder)
    low.mask_decoder.to(dtype)
    for module in low.mask_decoder.modules():
        if isinstance(module, (LayerNorm, LayerNorm2d)):
            module.float()
    return low


class DecoderGraph(nn.Module):
    """What ``segdeploy export`` traces and the eager reference runs: the contract's inputs in,
    its outputs out, in the graph form asked for. Build it after the weights are loaded (it caches
    the dense positional encoding)."""

    def __init__(
        self, decoder: SamDecoder, mask_output: MaskOutput, postprocess: bool, form: GraphForm = GraphForm()
    ) -> None:
        super().__init__()
        self.form = form
        self.dtype = TORCH_DTYPES[form.precision]
        self.decoder = decoder if self.dtype == torch.float32 else cast_decoder(decoder, self.dtype)
        self.mask_output = mask_output
        self.postprocess = postprocess
        if form.upscale == UpscaleForm.MATMUL:  # before any trace, so they are plain constants
            self.decoder.mask_decoder.channels_last_upscaling_weights()
        with torch.no_grad():
            self.register_buffer("image_pe", decoder.prompt_encoder.dense_pe().to(self.dtype), persistent=False)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        return self.decode(image_embeddings, None, point_coords, point_labels, mask_input, has_mask_input, orig_im_size)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        image_index: torch.Tensor | None,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """The contract's outputs. ``image_index`` [B] picks each prompt's image out of
        ``image_embeddings`` [I,C,h,w] (one Gather); None broadcasts the one image over every prompt."""
        channels_last = self.form.upscale == UpscaleForm.MATMUL
        sparse, src, pos_tokens, token_mask, (height, width) = self.prompt_tokens(
            image_embeddings, image_index, point_coords, point_labels, mask_input, has_mask_input,
            1 + self.decoder.mask_decoder.num_mask_tokens,
        )
        if self.dtype != torch.float32:
            src, sparse = src.to(self.dtype), sparse.to(self.dtype)
        low_res_masks, iou_predictions = self.decoder.mask_decoder(
            src, pos_tokens, (height, width), sparse, token_mask, self.mask_output.tokens,
            few_token=self.form.attention == AttentionForm.FEWTOKEN,
            upscale_matmul=channels_last,
        )
        if self.dtype != torch.float32:
            low_res_masks, iou_predictions = low_res_masks.float(), iou_predictions.float()
        if not self.postprocess:
            return iou_predictions, low_res_masks
        if orig_im_size is None:
            raise ValueError("orig_im_size is required when postprocess is on")
        masks = self.upscale(low_res_masks, orig_im_size)
        return masks, iou_predictions, low_res_masks

    def upscale(self, low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """The in-graph postprocessing: low-res logits to the original size, by the family's rule
        (SAM 1: ``upscale_masks``). Compiled forms override this one step."""
        return upscale_masks(low_res_masks, orig_im_size)


    def prompt_tokens(
        self,
        image_embeddings: torch.Tensor,
        image_index: torch.Tensor | None,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        output_tokens: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple]:
        """What the transformer takes, for every family: the sparse prompt tokens; each prompt's image
        tokens [B,h*w,C] (its image, gathered by ``image_index`` or broadcast, plus its dense mask
        embedding); their positional encoding; the additive mask of ignored slots over
        ``output_tokens`` output tokens followed by the prompt's slots; and the grid (h, w)."""
        prompt_encoder = self.decoder.prompt_encoder
        sparse = prompt_encoder.embed_points(point_coords, point_labels)
        grid = image_embeddings.shape[-2:]
        if self.form.upscale == UpscaleForm.MATMUL:  # the images are transposed once, not once per prompt
            image_tokens = image_embeddings.flatten(2).transpose(1, 2)
            if image_index is not None:
                image_tokens = torch.index_select(image_tokens, 0, image_index)
            src = image_tokens + prompt_encoder.embed_masks_channels_last(mask_input, has_mask_input)
        else:
            if image_index is not None:
                image_embeddings = torch.index_select(image_embeddings, 0, image_index)
            src = (image_embeddings + prompt_encoder.embed_masks(mask_input, has_mask_input)).flatten(2).transpose(1, 2)
        pos_tokens = self.image_pe.flatten(2).transpose(1, 2)

        ignored = (point_labels == float(contract.Label.IGNORED)).to(sparse.dtype)
        output_slots = torch.zeros_like(ignored[:, :1]).expand(-1, output_tokens)
        ignored = torch.cat([output_slots, ignored], dim=1)
        token_mask = (ignored * IGNORED_SLOT_LOGIT)[:, None, None, :]
        return sparse, src, pos_tokens, token_mask, grid


class MultiImageDecoderGraph(DecoderGraph):
    """The multi-image flavor: prompts on several images in one call, each prompt naming its image
    by ``image_index``; no in-graph postprocessing (original sizes differ per image)."""

    def __init__(self, decoder: SamDecoder, mask_output: MaskOutput, form: GraphForm = GraphForm()) -> None:
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


class OfficialSignatureGraph(DecoderGraph):
    """The official SamOnnxModel export's signature (float32 ``orig_im_size``, ``has_mask_input`` [1],
    one prompt per call), computed by our decoder: correct at every image size, since the crop size
    comes from ``orig_im_size`` at run time. ``MaskOutput.BEST`` reproduces ``return_single_mask=True``:
    token 0 when the prompt has more than 2 points (padding point included), else the best-scored
    of tokens 1..3."""

    def __init__(self, decoder: SamDecoder, mask_output: MaskOutput, form: GraphForm = GraphForm()) -> None:
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


def decoder_graph(decoder: SamDecoder, layout: contract.GraphLayout, form: GraphForm = GraphForm()) -> DecoderGraph:
    """The module whose inputs and outputs are ``layout``'s, in ``form``."""
    if layout.official:
        return OfficialSignatureGraph(decoder, layout.mask_output, form)
    if layout.multi_image:
        return MultiImageDecoderGraph(decoder, layout.mask_output, form)
    return DecoderGraph(decoder, layout.mask_output, layout.postprocess, form)


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
