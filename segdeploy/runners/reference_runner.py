"""ONNX's own reference evaluator (``onnx.reference``, numpy): slow, but it runs what no onnxruntime
CPU kernel does, bfloat16 graphs included (through ml_dtypes), so a bf16 graph can be checked here.
The onnxruntime-form graphs' contrib operators (``com.microsoft`` Gelu and BiasGelu, written by
segdeploy.rewrites) are given to it here, defined as onnxruntime documents them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from segdeploy.contract import TensorSpec
from segdeploy.runners.base import Runner


def _contrib_ops() -> list[type]:
    """The com.microsoft operators segdeploy's graphs use, for the reference evaluator (exact erf GELU)."""
    from math import erf

    from onnx.reference.op_run import OpRun

    exact_erf = np.vectorize(erf, otypes=["d"])

    def gelu(x: np.ndarray) -> np.ndarray:
        wide = x.astype(np.float64)
        return (0.5 * wide * (1.0 + exact_erf(wide / np.sqrt(2.0)))).astype(x.dtype)

    class Gelu(OpRun):
        op_domain = "com.microsoft"

        def _run(self, x, approximate=None):  # the evaluator passes the standard Gelu's attribute
            return (gelu(x),)

    class BiasGelu(OpRun):
        op_domain = "com.microsoft"

        def _run(self, x, bias, approximate=None):
            return (gelu(x + bias),)

    return [Gelu, BiasGelu]


class ReferenceRunner(Runner):
    """Runs an ONNX file with ``onnx.reference.ReferenceEvaluator`` (one call at a time)."""

    name = "onnx-reference"

    def __init__(self, path: Path, input_specs: Sequence[TensorSpec], output_names: Sequence[str]) -> None:
        super().__init__(input_specs, output_names)
        self.path = Path(path)
        self.evaluator = None

    def _activate(self) -> None:
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator(str(self.path), new_ops=_contrib_ops())

    def _deactivate(self) -> None:
        self.evaluator = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        outputs = self.evaluator.run(self.output_names, feeds)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(self.output_names, outputs)}
