"""SAM 1 checkpoints: official SAM / MobileSAM files (``prompt_encoder.*``, ``mask_decoder.*``;
``image_encoder.*`` ignored), decoder-only files, safetensors, or seeded random weights scaled to
give realistic mask logits."""

from __future__ import annotations

from pathlib import Path

import torch

from segdeploy.errors import BadInputError
from segdeploy.families.sam1.model import DEFAULT_VARIANT, VARIANTS, SamDecoder
from segdeploy.weights import RANDOM_LOGIT_STD, WeightsInfo, check_fits, decoder_state, file_sha256, read_checkpoint, seeded_copy

DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.")


def random_decoder(variant: str, seed: int) -> SamDecoder:
    """A decoder with seeded random weights whose mask logits have a realistic scale."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamDecoder(VARIANTS[variant]).eval()
        _scale_hypernetworks(model)
    return model


def _scale_hypernetworks(model: SamDecoder) -> None:
    """Scale the hypernetworks' last layers so the low-res mask logits reach RANDOM_LOGIT_STD.

    Calibrated on one fixed synthetic prompt drawn from the already-seeded RNG, so it is
    deterministic for a seed.
    """
    from segdeploy.contract import MaskOutput
    from segdeploy.families.sam1.graph import SamDecoderGraph

    graph = SamDecoderGraph(model, MaskOutput.ALL, postprocess=False)
    embeddings = 0.5 * torch.randn(1, 256, 64, 64)
    coords = torch.rand(4, 3, 2) * 1024
    labels = torch.tensor([[1.0, 0.0, -1.0]] * 4)
    with torch.no_grad():
        _, logits = graph(embeddings, coords, labels, torch.zeros(4, 1, 256, 256), torch.zeros(4))
        factor = RANDOM_LOGIT_STD / float(logits.std())
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(factor)
            mlp.layers[-1].bias.mul_(factor)


def load_decoder(
    variant: str = DEFAULT_VARIANT, checkpoint: Path | None = None, seed: int = 0
) -> tuple[SamDecoder, WeightsInfo]:
    """Build a decoder from a checkpoint, or from seeded random weights when none is given."""
    if variant not in VARIANTS:
        raise BadInputError(f"unknown SAM variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if checkpoint is None:
        return seeded_copy(random_decoder, variant, seed), WeightsInfo(variant=variant, seed=seed)
    checkpoint = Path(checkpoint)
    state = decoder_state(read_checkpoint(checkpoint), checkpoint, DECODER_PREFIXES)
    model = SamDecoder(VARIANTS[variant])
    check_fits(model, state, checkpoint)
    model.load_state_dict(state, strict=True)
    return model.eval(), WeightsInfo(variant=variant, sha256=file_sha256(checkpoint), path=str(checkpoint))
