"""SAM's mask decoder: output tokens, the two-way transformer, upscaling and hypernetworks."""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.model.common import MLP, LayerNorm2d
from segdeploy.model.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts mask logits and IoU scores from image tokens and prompt tokens."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_embeddings: torch.Tensor,
        dense_embeddings: torch.Tensor,
        token_mask: torch.Tensor,
        mask_tokens: tuple[int, ...],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return low-resolution mask logits [B,M,4h,4w] and IoU predictions [B,M].

        ``image_embeddings`` [1,C,h,w] is broadcast over the B prompts (never repeated);
        ``mask_tokens`` picks which of the mask tokens become outputs (a contiguous run).
        """
        batch = sparse_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat([output_tokens, sparse_embeddings], dim=1)

        src = image_embeddings + dense_embeddings
        _, channels, height, width = src.shape
        image_tokens = src.flatten(2).transpose(1, 2)
        pos_tokens = image_pe.flatten(2).transpose(1, 2)

        hs, image_tokens = self.transformer(image_tokens, pos_tokens, tokens, token_mask)

        src = image_tokens.transpose(1, 2).reshape(batch, channels, height, width)
        upscaled = self.output_upscaling(src)
        _, up_channels, up_height, up_width = upscaled.shape
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in mask_tokens], dim=1
        )
        masks = (hyper_in @ upscaled.reshape(batch, up_channels, up_height * up_width)).reshape(
            batch, len(mask_tokens), up_height, up_width
        )
        iou_pred = self.iou_prediction_head(hs[:, 0, :])[:, mask_tokens[0] : mask_tokens[-1] + 1]
        return masks, iou_pred
