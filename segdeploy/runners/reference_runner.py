"""ONNX's own reference evaluator (``onnx.reference``, numpy): slow, but it runs what no onnxruntime
CPU kernel does, bfloat16 graphs included (through ml_dtypes), so a bf16 graph can be checked here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from segdeploy.contract import TensorSpec
from segdeploy.runners.base import Runner


class ReferenceRunner(Runner):
    """Runs an ONNX file with ``onnx.reference.ReferenceEvaluator`` (one call at a time)."""

    name = "onnx-reference"

    def __init__(self, path: Path, input_specs: Sequence[TensorSpec], output_names: Sequence[str]) -> None:
        super().__init__(input_specs, output_names)
        self.path = Path(path)
        self.evaluator = None

    def _activate(self) -> None:
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator(str(self.path))

    def _deactivate(self) -> None:
        self.evaluator = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        outputs = self.evaluator.run(self.output_names, feeds)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(self.output_names, outputs)}
