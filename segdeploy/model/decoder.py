"""The deployable decoder every family builds on: a prompt encoder + mask decoder holder, the
precision policy, and the graph wrapper that export traces (prompt labels to tokens, ignored-slot
masking, the family's in-graph postprocessing). Knows no family: each one subclasses these."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

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


class PromptableDecoder(nn.Module):
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
        """The family's mask decoder around the two-way transformer (SAM's; families override it)."""
        return MaskDecoder(transformer_dim=config.embed_dim, transformer=transformer, num_multimask_outputs=config.num_multimask_outputs)


TORCH_DTYPES = {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}


def cast_decoder(decoder: PromptableDecoder, dtype: torch.dtype) -> PromptableDecoder:
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
        self, decoder: PromptableDecoder, mask_output: MaskOutput, postprocess: bool, form: GraphForm = GraphForm()
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
        return self.contract_outputs(low_res_masks, iou_predictions, orig_im_size)

    def contract_outputs(self, low_res_masks: torch.Tensor, iou_predictions: torch.Tensor, orig_im_size: torch.Tensor | None, *extra: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The contract's outputs in its order: the masks at the original size (postprocessing
        graphs), the IoU predictions, the low-res masks, then a family's ``extra`` outputs."""
        if not self.postprocess:
            return iou_predictions, low_res_masks, *extra
        if orig_im_size is None:
            raise ValueError("orig_im_size is required when postprocess is on")
        return self.upscale(low_res_masks, orig_im_size), iou_predictions, low_res_masks, *extra

    def upscale(self, low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """The in-graph postprocessing: low-res logits to the original size, by the family's rule.
        Each family's graph defines it; compiled forms override this one step."""
        raise NotImplementedError(f"{type(self).__name__} has no in-graph postprocessing")


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
