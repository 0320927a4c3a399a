"""The deployable decoder: SAM's prompt encoder + mask decoder, and the graph wrapper that export
traces (prompt labels to tokens, ignored-slot masking, in-graph postprocessing)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from segdeploy import contract
from segdeploy.contract import MaskOutput
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
        self.mask_decoder = MaskDecoder(
            transformer_dim=config.embed_dim,
            transformer=TwoWayTransformer(
                depth=config.depth,
                embedding_dim=config.embed_dim,
                num_heads=config.num_heads,
                mlp_dim=config.mlp_dim,
                attention_downsample_rate=config.attention_downsample_rate,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
        )


def prepadded_size(orig_im_size: torch.Tensor, longest_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) after SAM's longest-side resize, as floor(side * L / max(H, W) + 0.5) in integers."""
    height, width = orig_im_size[0], orig_im_size[1]
    longest = torch.maximum(height, width)
    new_height = torch.div(height * longest_side + longest // 2, longest, rounding_mode="floor")
    new_width = torch.div(width * longest_side + longest // 2, longest, rounding_mode="floor")
    return new_height, new_width


class DecoderGraph(nn.Module):
    """What ``segdeploy export`` traces and the eager reference runs: the contract's inputs in,
    its outputs out. Build it after the weights are loaded (it caches the dense positional encoding).
    """

    def __init__(self, decoder: SamDecoder, mask_output: MaskOutput, postprocess: bool) -> None:
        super().__init__()
        self.decoder = decoder
        self.mask_output = mask_output
        self.postprocess = postprocess
        with torch.no_grad():
            self.register_buffer("image_pe", decoder.prompt_encoder.dense_pe(), persistent=False)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        prompt_encoder = self.decoder.prompt_encoder
        sparse = prompt_encoder.embed_points(point_coords, point_labels)
        dense = prompt_encoder.embed_masks(mask_input, has_mask_input)

        num_output_tokens = 1 + self.decoder.mask_decoder.num_mask_tokens
        ignored = (point_labels == float(contract.Label.IGNORED)).to(sparse.dtype)
        ignored = F.pad(ignored, (num_output_tokens, 0))
        token_mask = (ignored * IGNORED_SLOT_LOGIT)[:, None, None, :]

        low_res_masks, iou_predictions = self.decoder.mask_decoder(
            image_embeddings, self.image_pe, sparse, dense, token_mask, self.mask_output.tokens
        )
        if not self.postprocess:
            return iou_predictions, low_res_masks
        if orig_im_size is None:
            raise ValueError("orig_im_size is required when postprocess is on")
        masks = upscale_masks(low_res_masks, orig_im_size)
        return masks, iou_predictions, low_res_masks


def upscale_masks(low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
    """SAM's postprocessing: bilinear to the model-input frame, crop the padding, bilinear to (H, W)."""
    side = contract.MODEL_INPUT_SIZE
    masks = F.interpolate(low_res_masks, size=(side, side), mode="bilinear", align_corners=False)
    new_height, new_width = prepadded_size(orig_im_size, side)
    masks = masks[..., :new_height, :new_width]
    return F.interpolate(masks, size=(orig_im_size[0], orig_im_size[1]), mode="bilinear", align_corners=False)
