"""HQ-SAM's decoder, written for export: SAM's prompt encoder and two-way transformer (the shared
building blocks) and SAM's mask decoder plus segment_anything_hq's ``MaskDecoderHQ`` parts: the HQ
output token (``hf_token``) and its hypernetwork (``hf_mlp``), the fusion of the image embedding
and the early ViT feature into HQ features (``embedding_encoder`` + ``compress_vit_feat``), and the
refinement of the upscaled embedding (``embedding_maskfeature``).

The HQ token's mask is ``hf_mlp(token) . (embedding_maskfeature(upscaled) + hq_features)``. Two
rewrites of that product, the same function:
- the HQ features depend on the image only: they are computed once per image and read by every
  prompt on it (the official export recomputes them per prompt); their two last ConvTransposes are
  linear and only read through the HQ vector, so, like the last convolution below, they are folded
  into it per prompt (a [320,4] GEMM per prompt over a quarter of the pixels instead of two
  convolutions per image: fewer FLOPs up to ~30 prompts per image);
- ``embedding_maskfeature``'s last 3x3 convolution is linear and only its product with the prompt's
  hypernetwork vector is read, so the vector is folded into its weights first: per prompt, one
  [9, 64] GEMM over the pixels and a sum of nine shifted planes instead of a 64->32 3x3
  convolution (1/32 of that convolution's work).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from segdeploy.families.hq import contract as hq_contract
from segdeploy.model.common import MLP, LayerNorm2d
from segdeploy.model.decoder import DecoderConfig, PromptableDecoder
from segdeploy.model.mask_decoder import MaskDecoder
from segdeploy.model.transformer import TwoWayTransformer

OUTPUT_TOKENS = 6  # IoU, four mask tokens, the HQ token


@dataclass(frozen=True)
class HqConfig(DecoderConfig):
    """SAM's decoder hyperparameters plus the ViT width C that ``compress_vit_feat`` reads."""

    vit_dim: int = 1024


VARIANTS: dict[str, HqConfig] = {name: HqConfig(vit_dim=c) for name, c in hq_contract.VIT_CHANNELS.items()}


class HqMaskDecoder(MaskDecoder):
    """SAM's mask decoder plus MaskDecoderHQ's token, hypernetwork and feature-fusion layers (the
    official module and key names)."""

    def __init__(self, *, transformer_dim: int, transformer: TwoWayTransformer, num_multimask_outputs: int = 3, vit_dim: int = 1024) -> None:
        super().__init__(transformer_dim=transformer_dim, transformer=transformer, num_multimask_outputs=num_multimask_outputs)
        d = transformer_dim
        self.hf_token = nn.Embedding(1, d)
        self.hf_mlp = MLP(d, d, d // 8, 3)
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(vit_dim, d, kernel_size=2, stride=2), LayerNorm2d(d), nn.GELU(),
            nn.ConvTranspose2d(d, d // 8, kernel_size=2, stride=2),
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, kernel_size=2, stride=2), LayerNorm2d(d // 4), nn.GELU(),
            nn.ConvTranspose2d(d // 4, d // 8, kernel_size=2, stride=2),
        )
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(d // 8, d // 4, 3, 1, 1), LayerNorm2d(d // 4), nn.GELU(), nn.Conv2d(d // 4, d // 8, 3, 1, 1),
        )

    def hq_features(self, image_embeddings: torch.Tensor, interm_embeddings: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """Per image, the HQ features ``embedding_encoder(image_embeddings) + compress_vit_feat(interm)``
        but for the two last (linear) 2x2 ConvTransposes, whose product with the HQ vector is folded
        per prompt (:meth:`features_term`): their inputs stacked, [I,64+256,2h,2w] from
        [I,256,h,w] and the channels-last early ViT feature [I,h,w,C]; with ``channels_last``
        every layer a GEMM and the result in block order [I,h,w,(di,dj),320] (no pixel shuffle)."""
        if not channels_last:
            return torch.cat([self.embedding_encoder[:3](image_embeddings), self.compress_vit_feat[:3](interm_embeddings.permute(0, 3, 1, 2))], dim=1)
        encoded = _upsample_block_order(self.embedding_encoder[:3], image_embeddings.permute(0, 2, 3, 1))
        return torch.cat([encoded, _upsample_block_order(self.compress_vit_feat[:3], interm_embeddings)], dim=-1)

    def features_term(self, hq_vector: torch.Tensor, hq_inputs: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """``hq_vector . hq_features`` [B,4h,4w]: the two last ConvTransposes' weights summed over
        their 32 outputs with the prompt's HQ vector as weights ([B,320,2,2]), applied as one GEMM
        to the stacked inputs (``hq_inputs`` from :meth:`hq_features`, per prompt or broadcast)."""
        encoder_last, compress_last = self.embedding_encoder[3], self.compress_vit_feat[3]
        weight = torch.cat([encoder_last.weight, compress_last.weight], dim=0)  # [320,32,2,2]
        stacked, out = weight.shape[0], weight.shape[1]
        folded = (hq_vector @ weight.transpose(0, 1).reshape(out, stacked * 4)).reshape(-1, stacked, 4)  # [B,320,(di,dj)]
        bias = hq_vector @ (encoder_last.bias + compress_last.bias)  # [B]
        batch = hq_vector.shape[0]
        if channels_last:  # block order [I,h,w,(di,dj),320]: pixel (4i+2di+di2, 4j+2dj+dj2); one 1-channel shuffle
            images, height, width = hq_inputs.shape[:3]
            term = (hq_inputs.reshape(images, height * width * 4, stacked) @ folded).reshape(batch, height, width, 2, 2, 2, 2)
            return term.permute(0, 1, 3, 5, 2, 4, 6).reshape(batch, 4 * height, 4 * width) + bias[:, None, None]
        else:
            images, _, height, width = hq_inputs.shape
            term = (folded.transpose(1, 2) @ hq_inputs.reshape(images, stacked, height * width)).reshape(batch, 2, 2, height, width).permute(0, 3, 1, 4, 2)
        return term.reshape(batch, 2 * height, 2 * width) + bias[:, None, None]

    def forward(  # type: ignore[override]
        self,
        image_tokens: torch.Tensor,
        pos_tokens: torch.Tensor,
        grid: tuple[int, int],
        sparse_embeddings: torch.Tensor,
        token_mask: torch.Tensor,
        mask_tokens: tuple[int, ...],
        hq_features: torch.Tensor,
        hq_token_only: bool = False,
        few_token: bool = False,
        upscale_matmul: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res mask logits [B,M,4h,4w] and IoU predictions [B,M] for SAM's ``mask_tokens``, each
        mask SAM's token plus the HQ token (the HQ token alone with ``hq_token_only``).

        ``hq_features`` come from :meth:`hq_features` (gathered per prompt or broadcast), channels
        last with ``upscale_matmul``, which writes every convolution as GEMMs on channels-last
        rows (what a bf16 graph below opset 22 needs: ONNX Conv and ConvTranspose take bf16 from
        opset 22). The rest is as :meth:`MaskDecoder.forward`.
        """
        batch = sparse_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat([output_tokens, sparse_embeddings], dim=1)
        hs, image_tokens = self.transformer(image_tokens, pos_tokens, tokens, token_mask, few_token, output_tokens=OUTPUT_TOKENS)

        height, width = grid
        hq_vector = self.hf_mlp(hs[:, 1 + self.num_mask_tokens, :])  # [B,32]
        hyper_in = None if hq_token_only else torch.stack([self.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in mask_tokens], dim=1)
        if upscale_matmul:
            upscaled = _sequential_channels_last(self.output_upscaling, image_tokens.reshape(batch, height, width, -1))  # [B,H,W,32]
            _, up_height, up_width, up_channels = upscaled.shape
            hq_mask = self.hq_mask_channels_last(upscaled, hq_vector, hq_features).reshape(batch, 1, up_height * up_width)
            if hyper_in is not None:  # [B,HW,32] x [B,32,M], then the small M-channel result is transposed
                sam_masks = (upscaled.reshape(batch, up_height * up_width, up_channels) @ hyper_in.transpose(1, 2)).transpose(1, 2)
        else:
            src = image_tokens.transpose(1, 2).reshape(batch, self.transformer_dim, height, width)
            upscaled = self.output_upscaling(src)  # [B,32,4h,4w]: the 3x3 convolutions below need it spatially
            _, up_channels, up_height, up_width = upscaled.shape
            hq_mask = self.hq_mask(upscaled, hq_vector, hq_features).reshape(batch, 1, up_height * up_width)
            if hyper_in is not None:
                sam_masks = hyper_in @ upscaled.reshape(batch, up_channels, up_height * up_width)
        masks = hq_mask.expand(-1, len(mask_tokens), -1) if hyper_in is None else sam_masks + hq_mask
        masks = masks.reshape(batch, len(mask_tokens), up_height, up_width)
        iou_pred = self.iou_prediction_head(hs[:, 0, :])[:, mask_tokens[0] : mask_tokens[-1] + 1]
        return masks, iou_pred

    def hq_mask(self, upscaled: torch.Tensor, hq_vector: torch.Tensor, hq_features: torch.Tensor) -> torch.Tensor:
        """``hq_vector . (embedding_maskfeature(upscaled) + hq_features)`` [B,4h,4w] from NCHW maps,
        with the last 3x3 convolution folded into the vector (see the module docstring)."""
        first, norm, act, last = self.embedding_maskfeature
        batch, _, height, width = upscaled.shape
        hidden = act(norm(first(upscaled)))  # [B,64,H,W]
        channels = hidden.shape[1]
        folded = self.folded_taps(hq_vector)  # [B,9,64]
        taps = (folded @ hidden.reshape(batch, channels, height * width)).reshape(batch, 9, height, width)
        return _sum_shifted(taps, 1) + (hq_vector @ last.bias)[:, None, None] + self.features_term(hq_vector, hq_features, channels_last=False)

    def hq_mask_channels_last(self, upscaled: torch.Tensor, hq_vector: torch.Tensor, hq_features: torch.Tensor) -> torch.Tensor:
        """:meth:`hq_mask` on channels-last maps ([B,H,W,32], features [B or 1,H,W,32]), every
        convolution as GEMMs."""
        first, norm, act, last = self.embedding_maskfeature
        batch, height, width, _ = upscaled.shape
        hidden = act(norm.channels_last(conv3x3_channels_last(upscaled, first)))  # [B,H,W,64]
        channels = hidden.shape[-1]
        taps = (hidden.reshape(batch, height * width, channels) @ self.folded_taps(hq_vector).transpose(1, 2)).reshape(batch, height, width, 9)
        return _sum_shifted(taps, 3) + (hq_vector @ last.bias)[:, None, None] + self.features_term(hq_vector, hq_features, channels_last=True)

    def folded_taps(self, hq_vector: torch.Tensor) -> torch.Tensor:
        """Per prompt, the 9 kernel taps of the last convolution summed over its outputs with the
        prompt's HQ vector as weights: [B,9,64], tap = 3*dy + dx."""
        last = self.embedding_maskfeature[3]
        channels = last.in_channels
        return (hq_vector @ last.weight.reshape(last.out_channels, channels * 9)).reshape(-1, channels, 9).transpose(1, 2)


def _sum_shifted(taps: torch.Tensor, axis: int) -> torch.Tensor:
    """sum over tap = 3*dy + dx of plane ``tap`` (on ``axis``: 1 for [B,9,H,W], 3 for [B,H,W,9])
    shifted by (dy-1, dx-1), zero outside: a 3x3 convolution's last step."""
    height, width = (taps.shape[2], taps.shape[3]) if axis == 1 else (taps.shape[1], taps.shape[2])
    padded = F.pad(taps, (1, 1, 1, 1)) if axis == 1 else F.pad(taps, (0, 0, 1, 1, 1, 1))
    out = None
    for tap in range(9):
        dy, dx = divmod(tap, 3)
        plane = padded[:, tap, dy : dy + height, dx : dx + width] if axis == 1 else padded[:, dy : dy + height, dx : dx + width, tap]
        out = plane if out is None else out + plane
    return out


def _upsample_block_order(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A 2x2 stride-2 ConvTranspose, LayerNorm2d and GELU on channels-last [N,h,w,Cin], left in
    block order [N,h,w,(di,dj),Cout] (both act per output pixel, so no pixel shuffle is needed:
    :meth:`HqMaskDecoder.features_term` shuffles its one-channel result instead)."""
    conv, norm, act = layers
    n, h, w, _ = x.shape
    out = conv.out_channels
    y = (x @ conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, 4 * out)).reshape(n, h, w, 4, out) + conv.bias
    return act(norm.channels_last(y))


def conv_transpose_2x2(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A 2x2 stride-2 ConvTranspose on channels-last [N,h,w,Cin] as one GEMM to (2,2,Cout) per pixel
    with the pixel shuffle after it: [N,2h,2w,Cout]. The GEMM's columns are ordered (dy, dx, Cout), so
    the shuffle moves whole Cout-float runs: with (Cout, dy, dx) it gathered single floats, and
    onnxruntime's CPU Transpose took 8x longer (107 against 13 ms for 16 prompts at ViT-B's 32 x 256x256)."""
    n, h, w, _ = x.shape
    out = conv.out_channels
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, 4 * out)  # [Cin, (dy, dx, Cout)]
    y = (x @ weight).reshape(n, h, w, 2, 2, out) + conv.bias
    return y.permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, out)


def conv3x3_channels_last(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 3x3 padding-1 Conv2d on channels-last [N,H,W,Cin]: ONNX's Conv between two transposes, or,
    in bf16 (which ONNX Conv takes only from opset 22), one GEMM over the nine shifted copies (an
    im2col that costs ~5x the transposes on onnxruntime's CPU provider)."""
    if x.dtype != torch.bfloat16:
        return F.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias, padding=1).permute(0, 2, 3, 1)
    n, height, width, channels = x.shape
    padded = F.pad(x, (0, 0, 1, 1, 1, 1))
    columns = torch.cat([padded[:, dy : dy + height, dx : dx + width, :] for dy in range(3) for dx in range(3)], dim=-1)
    weight = conv.weight.permute(2, 3, 1, 0).reshape(9 * channels, conv.out_channels)
    return columns @ weight + conv.bias


def _sequential_channels_last(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """MaskDecoderHQ's small nn.Sequential stacks (2x2 ConvTranspose, LayerNorm2d, GELU) on
    channels-last maps."""
    for layer in layers:
        if isinstance(layer, nn.ConvTranspose2d):
            x = conv_transpose_2x2(x, layer)
        elif isinstance(layer, LayerNorm2d):
            x = layer.channels_last(x)
        else:
            x = layer(x)
    return x


class HqDecoder(PromptableDecoder):
    """Holds ``prompt_encoder`` and ``mask_decoder`` under the official HQ-SAM checkpoint key names."""

    config: HqConfig

    def __init__(self, config: HqConfig = HqConfig()) -> None:
        super().__init__(config)

    def build_mask_decoder(self, config: HqConfig, transformer: TwoWayTransformer) -> HqMaskDecoder:  # type: ignore[override]
        return HqMaskDecoder(
            transformer_dim=config.embed_dim, transformer=transformer, num_multimask_outputs=config.num_multimask_outputs, vit_dim=config.vit_dim,
        )
