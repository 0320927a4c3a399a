"""Multi-head attention written the way ONNX exporters and TensorRT's fused kernels want it,
plus the few-token forms of SAM's cross-attentions."""

from __future__ import annotations

import math

import torch
from torch import nn


def softmax_fp32(logits: torch.Tensor, additive_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last axis computed in fp32 (precision policy), returned in the input's type."""
    dtype = logits.dtype
    if dtype != torch.float32:
        logits = logits.float()
    if additive_mask is not None:
        logits = logits + additive_mask
    weights = torch.softmax(logits, dim=-1)
    return weights if dtype == torch.float32 else weights.to(dtype)


class Attention(nn.Module):
    """Attention with an optional down-projection of the internal width (SAM's ``downsample_rate``).

    Export-minded differences from the reference, none of which change the function:
    the 1/sqrt(head_dim) scale is applied to q before the first MatMul (TensorRT's fusion pattern),
    heads are laid out [B, heads, S, d], and an optional additive mask over the keys removes
    ignored prompt slots from the softmax.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide the internal attention width")
        self.head_dim = self.internal_dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n, _ = x.shape
        return x.transpose(1, 2).reshape(b, n, self.internal_dim)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend q [B,Sq,C] to k, v [B,Sk,C]; ``key_mask`` is additive, shaped [B,1,1,Sk]."""
        q = self._split_heads(self.q_proj(q) * self.scale)
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        weights = softmax_fp32(q @ k.transpose(-1, -2), key_mask)
        return self.out_proj(self._merge_heads(weights @ v))

    def token_to_image_fewtoken(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Tokens q [B,T,C] attend to image positions k, v [B,HW,C]; the same function as ``forward``.

        The key projection is folded into the query side (q_h Wk_h: T x C per head; the key bias
        adds a per-row constant, which softmax ignores) and the value projection is applied after
        the attention-weighted sum (rows of softmax sum to 1, so the value bias passes through).
        The image side is then used as it is: [B, heads*T, C] x [B, C, HW], one GEMM per prompt.
        """
        batch, tokens, _ = q.shape
        heads, head_dim, width = self.num_heads, self.head_dim, self.embedding_dim
        q = self._split_heads(self.q_proj(q) * self.scale)  # [B,h,T,d]
        key_weight = self.k_proj.weight.reshape(heads, head_dim, width)  # [h,d,C]
        q_folded = (q @ key_weight).reshape(batch, heads * tokens, width)  # [B,hT,C]
        weights = softmax_fp32(q_folded @ k.transpose(1, 2))  # [B,hT,HW]
        context = (weights @ v).reshape(batch, heads, tokens, width)  # [B,h,T,C]
        value_weight = self.v_proj.weight.reshape(heads, head_dim, width).transpose(1, 2)  # [h,C,d]
        value_bias = self.v_proj.bias.reshape(heads, 1, head_dim)
        out = context @ value_weight + value_bias  # [B,h,T,d]
        return self.out_proj(self._merge_heads(out))

    def image_to_token_fewtoken(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor
    ) -> torch.Tensor:
        """Image positions q [B,HW,C] attend to tokens k, v [B,T,C]; the same function as ``forward``.

        The query projection is folded into the keys (Wq_h^T k_h: C x T per head, and a per-token
        bias bq_h . k_h) and the output projection into the values (v_h Wo_h^T: T x C per head), so
        the image side meets only two GEMMs with inner size heads*T and no projection of its own.
        """
        batch, tokens, _ = k.shape
        heads, head_dim, width = self.num_heads, self.head_dim, self.embedding_dim
        keys = self._split_heads(self.k_proj(k)).transpose(-1, -2) * self.scale  # [B,h,d,T]
        query_weight = self.q_proj.weight.reshape(heads, head_dim, width).transpose(1, 2)  # [h,C,d]
        keys_folded = (query_weight @ keys).permute(0, 2, 1, 3).reshape(batch, width, heads * tokens)
        key_bias = self.q_proj.bias.reshape(heads, 1, head_dim) @ keys  # [B,h,1,T]
        logits = q @ keys_folded + key_bias.reshape(batch, 1, heads * tokens)  # [B,HW,hT]
        logits = logits.reshape(batch, -1, heads, tokens)
        weights = softmax_fp32(logits, key_mask.reshape(batch, 1, 1, tokens)).reshape(batch, -1, heads * tokens)
        out_weight = self.out_proj.weight.transpose(0, 1).reshape(heads, head_dim, width)  # [h,d,C]
        # each head's weights sum to 1, so out_proj's bias rides on the values, 1/heads per head
        values = self._split_heads(self.v_proj(v)) @ out_weight + self.out_proj.bias / heads
        return weights @ values.reshape(batch, heads * tokens, width)
