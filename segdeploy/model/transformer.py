"""SAM's two-way transformer: prompt tokens and image positions attend to each other."""

from __future__ import annotations

import torch
from torch import nn

from segdeploy.model.attention import Attention
from segdeploy.model.common import LayerNorm, MLPBlock


class TwoWayAttentionBlock(nn.Module):
    """Self-attention of tokens, tokens->image, MLP on tokens, image->tokens."""

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int,
        skip_first_layer_pe: bool,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = LayerNorm(embedding_dim)
        self.norm4 = LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        token_mask: torch.Tensor,
        few_token: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries, token_mask)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe  # keys do not change until the image->token attention: reused there
        to_image = self.cross_attn_token_to_image
        attn_out = to_image.token_to_image_fewtoken(q, k, keys) if few_token else to_image(q, k, keys)
        queries = self.norm2(queries + attn_out)

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        to_token = self.cross_attn_image_to_token
        if few_token:
            attn_out = to_token.image_to_token_fewtoken(k, q, queries, token_mask)
        else:
            attn_out = to_token(k, q, queries, token_mask)
        keys = self.norm4(keys + attn_out)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """A stack of two-way blocks and a final token->image attention."""

    def __init__(
        self,
        *,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = LayerNorm(embedding_dim)

    def forward(
        self,
        image_tokens: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
        token_mask: torch.Tensor,
        few_token: bool = False,
        output_tokens: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run on image tokens [B,HW,C], their encoding [1,HW,C] and prompt tokens [B,T,C].

        ``token_mask`` [B,1,1,T] is 0 for live tokens and a large negative number for ignored slots;
        ``few_token`` selects the few-token form of the cross-attentions (same function);
        ``output_tokens`` limits the returned tokens to the first ones (the rest are never read).
        Returns the processed tokens and image tokens.
        """
        queries, keys = point_embedding, image_tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, image_pe, token_mask, few_token)
        if output_tokens is not None:  # the last attention only matters for the tokens read out
            queries, point_embedding = queries[:, :output_tokens], point_embedding[:, :output_tokens]
        q = queries + point_embedding
        k = keys + image_pe
        final = self.final_attn_token_to_image
        attn_out = final.token_to_image_fewtoken(q, k, keys) if few_token else final(q, k, keys)
        queries = self.norm_final_attn(queries + attn_out)
        return queries, keys
