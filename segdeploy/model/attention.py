"""Multi-head attention written the way ONNX exporters and TensorRT's fused kernels want it."""

from __future__ import annotations

import math

import torch
from torch import nn


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
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend q [B,Sq,C] to k, v [B,Sk,C]; ``key_mask`` is additive, shaped [B,1,1,Sk]."""
        scale = 1.0 / math.sqrt(self.head_dim)
        q = self._split_heads(self.q_proj(q) * scale)
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        logits = q @ k.transpose(-1, -2)
        if key_mask is not None:
            logits = logits + key_mask
        out = torch.softmax(logits, dim=-1) @ v
        b, _, n, _ = out.shape
        out = out.transpose(1, 2).reshape(b, n, self.internal_dim)
        return self.out_proj(out)
