"""SAM's mask decoder: output tokens, the two-way transformer, upscaling and hypernetworks."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

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
        image_tokens: torch.Tensor,
        pos_tokens: torch.Tensor,
        grid: tuple[int, int],
        sparse_embeddings: torch.Tensor,
        token_mask: torch.Tensor,
        mask_tokens: tuple[int, ...],
        few_token: bool = False,
        upscale_matmul: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return low-resolution mask logits [B,M,4h,4w] and IoU predictions [B,M].

        ``image_tokens`` [B,h*w,C] is the image embedding plus each prompt's dense embedding,
        channels last; ``pos_tokens`` [1,h*w,C] its positional encoding (broadcast, never repeated);
        ``grid`` is (h, w). ``mask_tokens`` picks which mask tokens become outputs (a contiguous run);
        ``few_token`` and ``upscale_matmul`` choose graph forms of the same function.
        """
        batch = sparse_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat([output_tokens, sparse_embeddings], dim=1)

        hs, image_tokens = self.transformer(
            image_tokens, pos_tokens, tokens, token_mask, few_token, output_tokens=output_tokens.shape[1]
        )

        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in mask_tokens], dim=1
        )
        height, width = grid
        if upscale_matmul:
            masks = self.upscale_channels_last(image_tokens, hyper_in, height, width)
        else:
            src = image_tokens.transpose(1, 2).reshape(batch, self.transformer_dim, height, width)
            upscaled = self.output_upscaling(src)
            _, up_channels, up_height, up_width = upscaled.shape
            masks = (hyper_in @ upscaled.reshape(batch, up_channels, up_height * up_width)).reshape(
                batch, len(mask_tokens), up_height, up_width
            )
        iou_pred = self.iou_prediction_head(hs[:, 0, :])[:, mask_tokens[0] : mask_tokens[-1] + 1]
        return masks, iou_pred

    def upscale_channels_last(
        self, image_tokens: torch.Tensor, hyper_in: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        """``output_upscaling`` and the hypernetwork product as channels-last GEMMs.

        A 2x2 stride-2 ConvTranspose maps each input pixel to its own 2x2 output block, so it is a
        GEMM to (2*2*C_out) channels with the bias fused; LayerNorm2d and GELU act per pixel, so both
        stages and the mask product run on [B*h*w*16, C] rows without moving data. The sub-pixel
        order is chosen (column offset before row offset in the first stage) so that the single
        pixel shuffle at the end, on the M-channel masks, is a rank-5 Transpose.
        """
        first, norm, first_act, second, second_act = self.output_upscaling
        batch, positions, channels = image_tokens.shape
        mid, out = first.out_channels, second.out_channels
        first_weight, first_bias, second_weight, second_bias = self.channels_last_upscaling_weights()
        y = F.linear(image_tokens.reshape(-1, channels), first_weight, first_bias)
        y = first_act(norm.channels_last(y.reshape(-1, mid)))
        y = second_act(F.linear(y, second_weight, second_bias))
        masks_count = hyper_in.shape[1]
        masks = hyper_in @ y.reshape(batch, positions * 16, out).transpose(1, 2)  # [B, M, h*w*16]
        # (i, j, dj1, di1, di2, dj2) -> (i, di1, di2, j, dj1, dj2): row 4i+2di1+di2, column 4j+2dj1+dj2
        masks = masks.reshape(batch * masks_count, height, width * 2, 4, 2).permute(0, 1, 3, 2, 4)
        return masks.reshape(batch, masks_count, 4 * height, 4 * width)

    def channels_last_upscaling_weights(self) -> tuple[torch.Tensor, ...]:
        """The two ConvTranspose layers as Linear weights and biases, computed once and detached.

        Kept as non-persistent buffers, so they follow ``.to(device/dtype)`` like the parameters they
        come from and export writes them as plain initializers (re-load weights with a new DecoderGraph).
        Stage one's rows come out as (pixel, dj, di): weight [C_in, C_out, di, dj] -> [(dj, di, C_out), C_in];
        stage two's as (pixel, dj1, di1, di2, dj2): [C_in, C_out, di, dj] -> [(di, dj, C_out), C_in].
        """
        names = ("upscale_first_weight", "upscale_first_bias", "upscale_second_weight", "upscale_second_bias")
        if not hasattr(self, names[0]):
            first, _, _, second, _ = self.output_upscaling
            with torch.no_grad():
                values = (
                    first.weight.permute(3, 2, 1, 0).reshape(4 * first.out_channels, -1).contiguous(),
                    first.bias.repeat(4),
                    second.weight.permute(2, 3, 1, 0).reshape(4 * second.out_channels, -1).contiguous(),
                    second.bias.repeat(4),
                )
            for name, value in zip(names, values):
                self.register_buffer(name, value, persistent=False)
        return tuple(getattr(self, name) for name in names)
