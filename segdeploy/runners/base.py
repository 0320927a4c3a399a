"""The runner contract every backend implements: activate, infer on named numpy arrays, deactivate.

The base class checks feeds against the I/O contract, so each backend sees only well-formed inputs
and a user mistake becomes one clear BadInputError instead of a backend's stack trace.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from segdeploy import contract
from segdeploy.contract import TensorSpec
from segdeploy.errors import BadInputError


def check_feeds(feeds: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> None:
    """Raise BadInputError unless ``feeds`` match ``specs``: names, dtypes, ranks, fixed dims, one
    value per symbolic dim, valid labels and a positive orig_im_size."""
    expected = [s.name for s in specs]
    if sorted(feeds) != sorted(expected):
        raise BadInputError(f"inputs {sorted(feeds)} do not match the contract's {sorted(expected)}")
    symbols: dict[str, tuple[int, str]] = {}
    for spec in specs:
        array = feeds[spec.name]
        if array.dtype != np.dtype(spec.dtype):
            raise BadInputError(f"{spec.name} must be {spec.dtype}, got {array.dtype}")
        if array.ndim != len(spec.dims):
            raise BadInputError(f"{spec.name} must have shape {spec.shape_text()}, got {list(array.shape)}")
        for size, dim in zip(array.shape, spec.dims):
            if isinstance(dim, int) and size != dim:
                raise BadInputError(f"{spec.name} must have shape {spec.shape_text()}, got {list(array.shape)}")
            if isinstance(dim, str):
                seen = symbols.setdefault(dim, (size, spec.name))
                if seen[0] != size:
                    raise BadInputError(f"{dim} is {seen[0]} in {seen[1]} but {size} in {spec.name}")
                if size < 1:
                    raise BadInputError(f"{dim} must be at least 1 in {spec.name}")
    labels = feeds.get(contract.POINT_LABELS.name)
    if labels is not None:
        bad = np.setdiff1d(np.unique(labels), sorted(contract.VALID_LABELS))
        if bad.size:
            raise BadInputError(f"point_labels holds {bad[:5].tolist()}; valid labels are {sorted(contract.VALID_LABELS)}")
    index = feeds.get(contract.IMAGE_INDEX.name)
    if index is not None:
        images = feeds[contract.IMAGE_EMBEDDINGS.name].shape[0]
        if index.size and (index.min() < 0 or index.max() >= images):
            raise BadInputError(f"image_index must lie in 0..{images - 1} (there are {images} images), got {sorted(set(index.tolist()))[:5]}")
    size = feeds.get(contract.ORIG_IM_SIZE.name)
    if size is not None and (size < 1).any():
        raise BadInputError(f"orig_im_size must be positive, got {size.tolist()}")


class Runner(ABC):
    """A backend that runs the decoder graph. Use as a context manager or call activate/deactivate."""

    name: str = "runner"
    thread_safe: bool = False  # may infer() run in several threads at once? (callers lock otherwise)

    def __init__(self, input_specs: Sequence[TensorSpec], output_names: Sequence[str]) -> None:
        self.input_specs = list(input_specs)
        self.output_names = list(output_names)
        self.is_active = False

    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on contract inputs; returns outputs by name, as float32 numpy arrays."""
        if not self.is_active:
            raise RuntimeError(f"{self.name} runner used before activate()")
        check_feeds(feeds, self.input_specs)
        outputs = self._infer(dict(feeds))
        return {name: outputs[name] for name in self.output_names}

    def _activate(self) -> None:  # noqa: B027 - optional hook
        """Load what the backend needs (sessions, engines)."""

    def _deactivate(self) -> None:  # noqa: B027 - optional hook
        """Free what _activate loaded."""

    @abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Backend-specific inference on checked feeds."""
