"""An independent FLOP count of SAM's mask decoder, written from its architecture (segment-anything's
modeling/: TwoWayTransformer depth 2, 8 heads, MLP 2048, attention downsample 2; two 2x2 stride-2
ConvTranspose; hypernetwork MLPs; the IoU head; the mask-input convs), as 2 x multiply-adds of its
matrix products and convolutions. Tests compare segdeploy's counter (which reads a graph) with it."""

from __future__ import annotations


def sam_decoder_flops(
    points: int, masks: int, embed: int = 256, image_side: int = 64, depth: int = 2, mlp: int = 2048, downsample: int = 2, mask_input: bool = True,
) -> int:
    """FLOPs of one prompt with ``points`` point slots, computing ``masks`` mask tokens' outputs
    (``mask_input``: with the mask-input downscaling convs, which a graph may skip without one)."""
    tokens = 1 + 4 + points  # the IoU token, SAM's 4 mask tokens, one per point
    image = image_side * image_side
    c, d = embed, embed // downsample

    def mm(m: int, k: int, n: int) -> int:
        return 2 * m * k * n

    def cross(queries: int, keys: int) -> int:  # projections to d, attention, projection back
        return mm(queries, c, d) + 2 * mm(keys, c, d) + mm(queries, d, c) + 2 * mm(queries, d, keys)

    block = 4 * mm(tokens, c, c) + 2 * mm(tokens, c, tokens)  # self-attention of the tokens
    block += cross(tokens, image) + mm(tokens, c, mlp) + mm(tokens, mlp, c) + cross(image, tokens)
    total = depth * block + cross(tokens, image)  # the blocks, then the final token-to-image attention
    total += mm(image, c, c // 4 * 4) + mm(4 * image, c // 4, c // 8 * 4)  # ConvTranspose 2x2/2, twice
    total += masks * (2 * mm(1, c, c) + mm(1, c, c // 8))  # hypernetwork MLPs of the computed tokens
    total += 2 * mm(1, c, c) + mm(1, c, 4)  # IoU head
    total += mm(masks, c // 8, 16 * image)  # masks = hypernetwork outputs @ upscaled embedding
    if mask_input:
        total += mm(128 * 128, 1 * 4, 4) + mm(64 * 64, 4 * 4, 16) + mm(image, 16, c)  # mask-input downscaling convs
    return total
