"""Loading decoder weights: official SAM / MobileSAM checkpoints, decoder-only files, safetensors,
or seeded random weights scaled to give realistic mask logits. Never unpickles arbitrary objects."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from segdeploy.errors import BadInputError
from segdeploy.model import DEFAULT_VARIANT, VARIANTS, SamDecoder

DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.")
# Random weights are scaled so the mask logits' standard deviation is about this, as with trained
# SAM weights (default initialisation gives logits under 1, which would make verify test nothing).
RANDOM_LOGIT_STD = 12.0


@dataclass(frozen=True)
class WeightsInfo:
    """Where a decoder's weights came from; recorded in metadata and checked by verify."""

    variant: str
    sha256: str | None = None  # of the checkpoint file
    seed: int | None = None  # of random weights
    path: str | None = None

    @property
    def description(self) -> str:
        if self.sha256 is not None:
            return f"checkpoint {self.path} (sha256 {self.sha256[:12]}…)"
        return f"random weights, seed {self.seed}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:200]}" if line else type(exc).__name__


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a .pth/.pt (weights_only) or .safetensors file."""
    if not path.is_file():
        raise BadInputError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a foreign file
        raise BadInputError(f"{path} is not a readable PyTorch or safetensors checkpoint ({_first_line(exc)})") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(f"{path} holds no state dict of tensors")
    return dict(state)


def decoder_state(state: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Keep the prompt_encoder.* and mask_decoder.* entries (image_encoder.* and the rest are ignored)."""
    kept = {k: v for k, v in state.items() if k.startswith(DECODER_PREFIXES)}
    if not kept and any(k.startswith("sam_mask_decoder.") for k in state):
        raise BadInputError(f"{path} is a SAM 2 checkpoint (sam_mask_decoder.* keys); pass a SAM 2 variant, e.g. --variant sam2.1_hiera_large")
    if not kept:
        sample = ", ".join(sorted(state)[:3]) or "no keys"
        raise BadInputError(f"{path} has no prompt_encoder.* or mask_decoder.* weights (found {sample})")
    return kept


def check_fits(model: SamDecoder | Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise a one-line error naming the first keys or shapes that don't fit the decoder (or the
    state dict given in its place, e.g. under the key names the file uses)."""
    expected = model if isinstance(model, Mapping) else model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:3])})")
    if problems:
        raise BadInputError(f"{path} does not fit the SAM decoder: " + "; ".join(problems))


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
    from segdeploy.model import DecoderGraph

    graph = DecoderGraph(model, MaskOutput.ALL, postprocess=False)
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
    """Build a decoder from a checkpoint, or from seeded random weights when none is given; a
    variant of another family (SAM 2) is built by that family."""
    if variant not in VARIANTS:
        from segdeploy.families import family_of_variant, get_family

        return get_family(family_of_variant(variant)).load_decoder(variant, checkpoint, seed)
    if checkpoint is None:
        return random_decoder(variant, seed), WeightsInfo(variant=variant, seed=seed)
    checkpoint = Path(checkpoint)
    state = decoder_state(read_checkpoint(checkpoint), checkpoint)
    model = SamDecoder(VARIANTS[variant])
    check_fits(model, state, checkpoint)
    model.load_state_dict(state, strict=True)
    return model.eval(), WeightsInfo(variant=variant, sha256=file_sha256(checkpoint), path=str(checkpoint))
