"""Small building blocks shared by the prompt encoder and the mask decoder."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm computed in fp32 whatever the input type (precision policy), cast back after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        return super().forward(x.float()).to(x.dtype)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor.

    Written as transpose -> layer_norm over the last axis -> transpose, so that it exports as one
    ONNX ``LayerNormalization`` (TensorRT runs that in fp32) instead of mean/pow/sqrt reductions.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        self.normalized_shape = (num_channels,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channels_last(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """The same normalisation on a channels-last tensor [..., C], computed in fp32."""
        dtype = x.dtype
        y = F.layer_norm(x.float() if dtype != torch.float32 else x, self.normalized_shape, self.weight, self.bias, self.eps)
        return y if dtype == torch.float32 else y.to(dtype)


class MLP(nn.Module):
    """A stack of Linear layers with ReLU between them (no activation after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


class MLPBlock(nn.Module):
    """The transformer's feed-forward block: Linear -> activation -> Linear."""

    def __init__(self, embedding_dim: int, mlp_dim: int, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))
