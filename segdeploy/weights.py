"""Reading decoder weights, for every family: .pth/.pt (weights only) and safetensors files, the
provenance a graph records, and one-line errors for files that do not fit. Never unpickles
arbitrary objects. Each family maps its checkpoints' keys (``families/<name>/weights.py``)."""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from segdeploy.errors import BadInputError

# Random weights are scaled so the mask logits' standard deviation is about this, as with trained
# SAM weights (default initialisation gives logits under 1, which would make verify test nothing).
RANDOM_LOGIT_STD = 12.0


Model = TypeVar("Model", bound=torch.nn.Module)
_SEEDED: OrderedDict[tuple, torch.nn.Module] = OrderedDict()
_SEEDED_LOCK = threading.Lock()
SEEDED_KEPT = 4  # the last few (variant, seed) pairs a process built


def seeded_copy(build: Callable[[str, int], Model], variant: str, seed: int) -> Model:
    """A fresh copy of ``build(variant, seed)``, built once per process for the last few pairs:
    seeded random weights are a function of both and of torch's thread count (which rounds the
    calibration forward pass), and building them runs that pass (0.2-0.4 s), where a copy takes
    ~10 ms. Callers may change their copy."""
    key = (build.__module__, build.__qualname__, variant, seed, torch.get_num_threads())
    with _SEEDED_LOCK:
        if key not in _SEEDED:
            _SEEDED[key] = build(variant, seed)
            while len(_SEEDED) > SEEDED_KEPT:
                _SEEDED.popitem(last=False)
        _SEEDED.move_to_end(key)
        return copy.deepcopy(_SEEDED[key])


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


class CheckpointLayoutError(BadInputError):
    """A checkpoint holds none of the keys a family's decoder reads; ``keys`` are the file's, so the
    registry can name the family it belongs to."""

    def __init__(self, message: str, keys: list[str]) -> None:
        super().__init__(message)
        self.keys = keys


def decoder_state(state: Mapping[str, torch.Tensor], path: Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Keep the entries under ``prefixes`` (an image encoder and the rest are ignored); a
    CheckpointLayoutError when there are none."""
    kept = {k: v for k, v in state.items() if k.startswith(prefixes)}
    if not kept:
        sample = ", ".join(sorted(state)[:3]) or "no keys"
        names = " or ".join(f"{prefix}*" for prefix in prefixes)
        raise CheckpointLayoutError(f"{path} has no {names} weights (found {sample})", list(state))
    return kept


def check_fits(model: torch.nn.Module | Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], path: Path) -> None:
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
