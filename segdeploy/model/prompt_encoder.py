"""SAM's prompt encoder: points, box corners and an optional low-resolution mask."""

from __future__ import annotations

import math

import torch
from torch import nn

from segdeploy.model.common import LayerNorm2d

# Additive attention mask for ignored prompt slots. Finite so that `0 * value` never makes a NaN
# and small enough in magnitude to fit fp16; exp() of it underflows to exactly 0 in fp16 and fp32.
IGNORED_SLOT_LOGIT = -30000.0


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding with random spatial frequencies (a Gaussian 2 x C/2 matrix)."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode coordinates normalised to [0, 1], shaped [..., 2], into [..., C]."""
        projected = (2.0 * coords - 1.0) @ self.positional_encoding_gaussian_matrix
        projected = (2.0 * math.pi) * projected
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)

    def dense(self, height: int, width: int) -> torch.Tensor:
        """The encoding of every cell centre of a height x width grid, shaped [C, H, W]."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return self.encode(grid).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Embeds labelled points into sparse tokens and a mask (or its absence) into a dense map."""

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # background click, foreground click, box top-left, box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid, shaped [1, C, H, W]."""
        return self.pe_layer.dense(*self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Embed points [B,N,2] (pixels of the model-input frame) with float labels [B,N].

        Labels -2 (ignored slot) and -1 (SAM's padding point) carry no positional encoding;
        each label adds its own learned embedding (none for -2). Out-of-range labels are clamped.
        """
        height, width = self.input_image_size
        scale = torch.tensor([1.0 / width, 1.0 / height], dtype=coords.dtype, device=coords.device)
        encoded = self.pe_layer.encode((coords + 0.5) * scale)
        has_position = (labels >= 0).to(encoded.dtype).unsqueeze(-1)
        table = torch.cat(
            [
                torch.zeros_like(self.not_a_point_embed.weight),
                self.not_a_point_embed.weight,
                *(embedding.weight for embedding in self.point_embeddings),
            ]
        )
        index = (labels + 2.0).clamp(0.0, 5.0).to(torch.int64)
        return encoded * has_position + table[index]

    def embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """Dense embeddings [B,C,h,w]: the downscaled mask where has_mask_input is 1, else no-mask."""
        weight = has_mask_input.reshape(-1, 1, 1, 1)
        no_mask = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return weight * self.mask_downscaling(mask_input) + (1.0 - weight) * no_mask

    def embed_masks_channels_last(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """``embed_masks`` as [B, h*w, C] tokens, computed without a full-size transpose or blend:
        the last (1x1) conv meets [has * features, has, 1 - has] in one GEMM whose weight is
        [W; bias; no_mask], so the blend costs 18 input channels instead of three C-wide passes."""
        *convs, last = self.mask_downscaling
        features = nn.Sequential(*convs)(mask_input)  # [B, c, h, w]
        batch, channels = features.shape[:2]
        features = features.flatten(2).transpose(1, 2)  # [B, h*w, c]
        weight = has_mask_input.reshape(-1, 1, 1)
        ones = torch.ones_like(features[..., :1])
        stacked = torch.cat([features * weight, ones * weight, ones * (1.0 - weight)], dim=-1)
        matrix = torch.cat([last.weight.reshape(last.out_channels, channels).t(), last.bias[None], self.no_mask_embed.weight])
        return stacked @ matrix
