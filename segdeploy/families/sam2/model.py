"""SAM 2's prompt encoder and mask decoder, written for export.

The prompt encoder and the two-way transformer are SAM 1's (``segdeploy.model``; the transformer's
MLP keys are renamed on load, see ``weights.py``). The mask decoder adds to SAM 1's: an object-score
token and head, a sigmoid on the IoU head, and the high-resolution skip additions in the upscaling
(``conv_s0``/``conv_s1`` are held, loaded and checked, but applied by the image encoder's side:
the graph takes the projected maps, as ``SAM2ImagePredictor`` keeps them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from segdeploy.families.sam2 import contract as sam2_contract
from segdeploy.model.common import MLP
from segdeploy.model.mask_decoder import MaskDecoder
from segdeploy.model.decoder import DecoderConfig, PromptableDecoder
from segdeploy.model.transformer import TwoWayTransformer

OUTPUT_TOKENS = 6  # object score, IoU, four mask tokens


@dataclass(frozen=True)
class Sam2Config(DecoderConfig):
    """Hyperparameters of SAM 2's decoder (SAM2Base._build_sam_heads and the released configs): SAM
    1's, plus the object-score head and the single-mask stability rule."""

    pred_obj_scores_mlp: bool = True  # every released config; False would make the head one Linear
    stability_delta: float = sam2_contract.STABILITY_DELTA
    stability_thresh: float = sam2_contract.STABILITY_THRESH


VARIANTS: dict[str, Sam2Config] = {name: Sam2Config() for name in sam2_contract.VARIANT_NAMES}


class Sam2MaskDecoder(MaskDecoder):
    """SAM 1's mask decoder plus SAM 2's object-score token and head and high-resolution skips."""

    def __init__(self, *, transformer_dim: int, transformer: TwoWayTransformer, num_multimask_outputs: int = 3, pred_obj_scores_mlp: bool = True) -> None:
        super().__init__(transformer_dim=transformer_dim, transformer=transformer, num_multimask_outputs=num_multimask_outputs)
        self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.pred_obj_score_head = MLP(transformer_dim, transformer_dim, 1, 3) if pred_obj_scores_mlp else nn.Linear(transformer_dim, 1)
        self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)

    def project_high_res(self, backbone_s0: torch.Tensor, backbone_s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder-side projections (``SAM2Base.forward_image``): raw 256-channel stride-4 and
        stride-8 backbone maps to the 32- and 64-channel maps the graph takes."""
        return self.conv_s0(backbone_s0), self.conv_s1(backbone_s1)

    def forward(  # type: ignore[override]
        self,
        image_tokens: torch.Tensor,
        pos_tokens: torch.Tensor,
        grid: tuple[int, int],
        sparse_embeddings: torch.Tensor,
        token_mask: torch.Tensor,
        mask_tokens: tuple[int, ...],
        high_res: tuple[torch.Tensor, torch.Tensor],
        few_token: bool = False,
        upscale_matmul: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Low-res mask logits [B,M,4h,4w], IoU predictions [B,M] (sigmoid) and object-score logits [B,1].

        ``high_res`` holds the projected maps per prompt or broadcast: NCHW ([*,32,4h,4w],
        [*,64,2h,2w]) for the ConvTranspose form, or rearranged by :func:`high_res_channels_last`
        for the matmul form. The rest is as :meth:`MaskDecoder.forward`.
        """
        batch = sparse_embeddings.shape[0]
        output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat([output_tokens, sparse_embeddings], dim=1)
        hs, image_tokens = self.transformer(image_tokens, pos_tokens, tokens, token_mask, few_token, output_tokens=OUTPUT_TOKENS)

        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](hs[:, 2 + i, :]) for i in mask_tokens], dim=1)
        height, width = grid
        feat_s0, feat_s1 = high_res
        if upscale_matmul:
            masks = self.upscale_channels_last_skips(image_tokens, hyper_in, height, width, feat_s0, feat_s1)
        else:
            first, norm, first_act, second, second_act = self.output_upscaling
            src = image_tokens.transpose(1, 2).reshape(batch, self.transformer_dim, height, width)
            upscaled = first_act(norm(first(src) + feat_s1))
            upscaled = second_act(second(upscaled) + feat_s0)
            _, up_channels, up_height, up_width = upscaled.shape
            masks = (hyper_in @ upscaled.reshape(batch, up_channels, up_height * up_width)).reshape(batch, len(mask_tokens), up_height, up_width)
        iou_pred = torch.sigmoid(self.iou_prediction_head(hs[:, 1, :])[:, mask_tokens[0] : mask_tokens[-1] + 1])
        object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        return masks, iou_pred, object_score_logits

    def upscale_channels_last_skips(
        self, image_tokens: torch.Tensor, hyper_in: torch.Tensor, height: int, width: int, feat_s0: torch.Tensor, feat_s1: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`MaskDecoder.upscale_channels_last` with SAM 2's skip additions before each
        activation; the skips come in the GEMM rows' order (:func:`high_res_channels_last`)."""
        first, norm, first_act, second, second_act = self.output_upscaling
        batch, positions, channels = image_tokens.shape
        mid, out = first.out_channels, second.out_channels
        first_weight, _, second_weight, _ = self.channels_last_upscaling_weights()
        # each ConvTranspose's bias rides on its skip (per image), so every stage adds once per prompt
        y = F.linear(image_tokens, first_weight).reshape(batch, positions * 4, mid) + (feat_s1 + first.bias)
        y = first_act(norm.channels_last(y))
        y = F.linear(y, second_weight).reshape(batch, positions * 16, out)
        y = second_act(y + (feat_s0 + second.bias))
        masks_count = hyper_in.shape[1]
        masks = hyper_in @ y.transpose(1, 2)  # [B, M, h*w*16]
        masks = masks.reshape(batch * masks_count, height, width * 2, 4, 2).permute(0, 1, 3, 2, 4)
        return masks.reshape(batch, masks_count, 4 * height, 4 * width)


def high_res_channels_last(feat_s0: torch.Tensor, feat_s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The projected maps in the matmul form's row order, once per image: feat_s1 [I,64,2h,2w] ->
    [I, h*w*4, 64] with rows (i, j, dj, di); feat_s0 [I,32,4h,4w] -> [I, h*w*16, 32] with rows
    (i, j, dj1, di1, di2, dj2), pixel (4i+2di1+di2, 4j+2dj1+dj2).

    Each map is made channels last (one 2-D transpose) and its rows are then picked with one Gather of
    C-wide rows: a single permutation straight from NCHW moves single floats and costs ~10x more on
    onnxruntime's CPU provider."""
    h, w = int(feat_s1.shape[-2]) // 2, int(feat_s1.shape[-1]) // 2  # fixed by the contract (64x64 grid)
    # tensors made per call from the cached arrays: a cached tensor first made inside torch.export's
    # trace would be a fake one, and every later eager call would get it
    s0_rows, s1_rows = (torch.from_numpy(rows) for rows in _block_order_rows(h, w))
    s0 = torch.index_select(feat_s0.flatten(2).transpose(1, 2), 1, s0_rows.to(feat_s0.device))
    s1 = torch.index_select(feat_s1.flatten(2).transpose(1, 2), 1, s1_rows.to(feat_s1.device))
    return s0, s1


@functools.cache
def _block_order_rows(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Raster indices (int64) of the block-ordered rows of the x4 (feat_s0) and x2
    (feat_s1) maps; computed with numpy, so a trace records them as two constants."""
    i, j, dj1, di1, di2, dj2 = np.meshgrid(*(np.arange(n) for n in (h, w, 2, 2, 2, 2)), indexing="ij")
    s0 = ((4 * i + 2 * di1 + di2) * (4 * w) + 4 * j + 2 * dj1 + dj2).reshape(-1)
    i, j, dj, di = np.meshgrid(*(np.arange(n) for n in (h, w, 2, 2)), indexing="ij")
    s1 = ((2 * i + di) * (2 * w) + 2 * j + dj).reshape(-1)
    return s0.astype(np.int64), s1.astype(np.int64)


class Sam2Decoder(PromptableDecoder):
    """Holds ``prompt_encoder`` and ``mask_decoder`` (SAM 1's holder with SAM 2's mask decoder);
    state-dict keys are SAM 1's layout (the official ``sam_prompt_encoder.*``/``sam_mask_decoder.*``
    keys map onto them, see weights.py)."""

    config: Sam2Config

    def __init__(self, config: Sam2Config = Sam2Config()) -> None:
        super().__init__(config)

    def build_mask_decoder(self, config: Sam2Config, transformer: TwoWayTransformer) -> Sam2MaskDecoder:  # type: ignore[override]
        return Sam2MaskDecoder(
            transformer_dim=config.embed_dim, transformer=transformer,
            num_multimask_outputs=config.num_multimask_outputs, pred_obj_scores_mlp=config.pred_obj_scores_mlp,
        )
