"""HQ-SAM checkpoints: the official ``sam_hq_vit_{b,l,h}.pth`` and ``sam_hq_vit_tiny.pth`` (SAM's full
state dict plus ``mask_decoder.hf_token``, ``hf_mlp``, ``compress_vit_feat``, ``embedding_encoder``,
``embedding_maskfeature``; ``image_encoder.*`` ignored) load as they are, as do decoder-only files
and safetensors; or seeded random weights scaled to give realistic mask logits."""

from __future__ import annotations

from pathlib import Path

import torch

from segdeploy.errors import BadInputError
from segdeploy.families.hq.model import VARIANTS, HqDecoder
from segdeploy.weights import RANDOM_LOGIT_STD, WeightsInfo, check_fits, decoder_state, file_sha256, read_checkpoint, seeded_copy

DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.")
HQ_KEYS = ("mask_decoder.hf_token.", "mask_decoder.hf_mlp.", "mask_decoder.compress_vit_feat.", "mask_decoder.embedding_encoder.", "mask_decoder.embedding_maskfeature.")


def random_decoder(variant: str, seed: int) -> HqDecoder:
    """A decoder with seeded random weights whose mask logits have a realistic scale: SAM's
    hypernetworks and the HQ token's are each scaled so their logits' std is RANDOM_LOGIT_STD."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HqDecoder(VARIANTS[variant]).eval()
        _scale_hypernetworks(model)
    return model


def _scale_hypernetworks(model: HqDecoder) -> None:
    """Calibrated on one synthetic prompt drawn from the already-seeded RNG (deterministic for a
    seed): SAM's tokens alone first (the HQ token's part is a sum), then the HQ token alone."""
    from segdeploy.contract import MaskOutput
    from segdeploy.families.hq.graph import HqDecoderGraph

    channels = model.config.vit_dim
    embeddings = 0.5 * torch.randn(1, 256, 64, 64)
    interm = 0.5 * torch.randn(1, 64, 64, channels)
    coords = torch.rand(1, 3, 2) * 1024
    labels = torch.tensor([[1.0, 0.0, -1.0]])
    feeds = (embeddings, interm, coords, labels, torch.zeros(1, 1, 256, 256), torch.zeros(1))
    mask_decoder = model.mask_decoder
    with torch.no_grad():
        graph = HqDecoderGraph(model, MaskOutput.ALL, postprocess=False, hq_token_only=True)
        _, hq_logits = graph(*feeds)
        factor = RANDOM_LOGIT_STD / float(hq_logits.std())
        mask_decoder.hf_mlp.layers[-1].weight.mul_(factor)
        mask_decoder.hf_mlp.layers[-1].bias.mul_(factor)
        # SAM's tokens: their logits are the fused ones minus the HQ token's
        fused = HqDecoderGraph(model, MaskOutput.ALL, postprocess=False)(*feeds)[1]
        hq_logits = graph(*feeds)[1]
        factor = RANDOM_LOGIT_STD / float((fused - hq_logits).std())
        for mlp in mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(factor)
            mlp.layers[-1].bias.mul_(factor)


def load_decoder(variant: str, checkpoint: Path | None = None, seed: int = 0) -> tuple[HqDecoder, WeightsInfo]:
    """An HQ-SAM decoder from an official or decoder-only checkpoint, or seeded random weights."""
    if variant not in VARIANTS:
        raise BadInputError(f"unknown HQ-SAM variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if checkpoint is None:
        return seeded_copy(random_decoder, variant, seed), WeightsInfo(variant=variant, seed=seed)
    checkpoint = Path(checkpoint)
    state = decoder_state(read_checkpoint(checkpoint), checkpoint, DECODER_PREFIXES)
    model = HqDecoder(VARIANTS[variant])
    if not any(key.startswith(HQ_KEYS) for key in state):
        raise BadInputError(f"{checkpoint} holds SAM's decoder without HQ-SAM's (no {HQ_KEYS[0]}* keys); pass a SAM variant or an HQ-SAM checkpoint")
    vit = state.get("mask_decoder.compress_vit_feat.0.weight")
    if vit is not None and vit.shape[0] != model.config.vit_dim:
        fits = [name for name, config in VARIANTS.items() if config.vit_dim == vit.shape[0]]
        raise BadInputError(f"{checkpoint} is for a ViT of width {vit.shape[0]}, {variant} has {model.config.vit_dim}; pass --variant {' or '.join(fits) or '?'}")
    check_fits(model, state, checkpoint)
    model.load_state_dict(state, strict=True)
    return model.eval(), WeightsInfo(variant=variant, sha256=file_sha256(checkpoint), path=str(checkpoint))
