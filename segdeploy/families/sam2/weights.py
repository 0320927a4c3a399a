"""SAM 2 decoder weights: the official checkpoints' keys mapped onto the decoder, decoder-only
files in either layout, or seeded random weights scaled as SAM 1's.

Official checkpoints (``sam2_hiera_*.pt``, ``sam2.1_hiera_*.pt``) hold ``{"model": state_dict}`` of a
whole SAM2Base; the decoder's part is ``sam_prompt_encoder.*`` and ``sam_mask_decoder.*`` (with
``conv_s0``/``conv_s1``). Its two-way transformer's MLP blocks are sam2's ``MLP``
(``mlp.layers.0``/``mlp.layers.1``), SAM 1's ``MLPBlock`` here (``mlp.lin1``/``mlp.lin2``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from segdeploy.errors import BadInputError
from segdeploy.families.sam2.model import VARIANTS, Sam2Decoder
from segdeploy.weights import RANDOM_LOGIT_STD, CheckpointLayoutError, WeightsInfo, check_fits, file_sha256, read_checkpoint, seeded_copy

OFFICIAL_PREFIXES = {"sam_prompt_encoder.": "prompt_encoder.", "sam_mask_decoder.": "mask_decoder."}
_OFFICIAL_MLP = re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)layers\.([01])\.")
_OUR_MLP = re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)lin([12])\.")


def from_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder's entries of an official (or our own) state dict under our key names; every other
    key (image encoder, memory attention and encoder, object pointers) is dropped."""
    kept = {}
    for key, value in state.items():
        for official, ours in OFFICIAL_PREFIXES.items():
            if key.startswith(official):
                key = ours + key[len(official):]
        if key.startswith(("prompt_encoder.", "mask_decoder.")):
            kept[_OFFICIAL_MLP.sub(lambda m: f"{m.group(1)}lin{int(m.group(2)) + 1}.", key)] = value
    return kept


def to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our decoder's state dict under the official SAM2Base key names (``sam_*`` prefixes, MLP layers)."""
    out = {}
    for key, value in state.items():
        key = _OUR_MLP.sub(lambda m: f"{m.group(1)}layers.{int(m.group(2)) - 1}.", key)
        for official, ours in OFFICIAL_PREFIXES.items():
            if key.startswith(ours):
                key = official + key[len(ours):]
        out[key] = value
    return out


def random_decoder(variant: str, seed: int) -> Sam2Decoder:
    """A decoder with seeded random weights whose mask logits have a realistic scale (as SAM 1's)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam2Decoder(VARIANTS[variant]).eval()
        _scale_hypernetworks(model)
    return model


def _scale_hypernetworks(model: Sam2Decoder) -> None:
    """Scale the hypernetworks' last layers so the low-res logits' std is RANDOM_LOGIT_STD, calibrated
    on one synthetic prompt drawn from the already-seeded RNG (deterministic for a seed)."""
    from segdeploy.contract import MaskOutput
    from segdeploy.families.sam2.graph import Sam2DecoderGraph

    graph = Sam2DecoderGraph(model, MaskOutput.ALL, postprocess=False)
    embeddings = 0.5 * torch.randn(1, 256, 64, 64)
    feat_s0, feat_s1 = 0.5 * torch.randn(1, 32, 256, 256), 0.5 * torch.randn(1, 64, 128, 128)
    coords = torch.rand(4, 3, 2) * 1024
    labels = torch.tensor([[1.0, 0.0, -1.0]] * 4)
    with torch.no_grad():
        _, logits, _ = graph(embeddings, feat_s0, feat_s1, coords, labels, torch.zeros(4, 1, 256, 256), torch.zeros(4))
        factor = RANDOM_LOGIT_STD / float(logits.std())
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(factor)
            mlp.layers[-1].bias.mul_(factor)


def load_decoder(variant: str, checkpoint: Path | None = None, seed: int = 0) -> tuple[Sam2Decoder, WeightsInfo]:
    """A SAM 2 decoder from an official or decoder-only checkpoint, or seeded random weights."""
    if variant not in VARIANTS:
        raise BadInputError(f"unknown SAM 2 variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if checkpoint is None:
        return seeded_copy(random_decoder, variant, seed), WeightsInfo(variant=variant, seed=seed)
    checkpoint = Path(checkpoint)
    raw = read_checkpoint(checkpoint)
    state = from_official(raw)
    if not state:
        sample = ", ".join(sorted(raw)[:3]) or "no keys"
        raise CheckpointLayoutError(f"{checkpoint} has no sam_prompt_encoder.*/sam_mask_decoder.* weights (found {sample})", list(raw))
    model = Sam2Decoder(VARIANTS[variant])
    official = {key: value for key, value in raw.items() if key.startswith(tuple(OFFICIAL_PREFIXES))}
    if official:  # an official layout: errors name the keys as the file spells them
        check_fits(to_official(model.state_dict()), official, checkpoint)
    check_fits(model, state, checkpoint)
    model.load_state_dict(state, strict=True)
    return model.eval(), WeightsInfo(variant=variant, sha256=file_sha256(checkpoint), path=str(checkpoint))
