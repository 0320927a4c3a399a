"""ONNX Runtime backend (CPU provider here; CUDA where onnxruntime-gpu is installed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from segdeploy.contract import TensorSpec
from segdeploy.errors import MissingDependencyError
from segdeploy.runners.base import Runner


class OrtRunner(Runner):
    """Runs an ONNX file with onnxruntime."""

    name = "onnxruntime"
    thread_safe = True  # InferenceSession.run may be called from several threads

    def __init__(
        self,
        path: Path,
        input_specs: Sequence[TensorSpec],
        output_names: Sequence[str],
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        super().__init__(input_specs, output_names)
        self.path = Path(path)
        self.threads = threads
        self.providers = list(providers)
        self.session = None
        self.spinning = True  # idle worker threads spin (fastest alone; steals cores from other backends in-process)

    def _activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types per status
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "NOT_IMPLEMENTED" in message:
                raise MissingDependencyError(
                    f"onnxruntime ({', '.join(self.providers)}) cannot run {self.path.name}: {message.split(':', 2)[-1].strip()}"
                    + bf16_hint(self.path)
                ) from None
            raise

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        outputs = self.session.run(self.output_names, feeds)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(self.output_names, outputs)}


def bf16_hint(path: Path) -> str:
    """What to do instead, when the graph onnxruntime could not run holds bfloat16 weights; else empty."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # the hint is a courtesy: the error it rides on stands without it
        return ""
    if not any(t.data_type == onnx.TensorProto.BFLOAT16 for t in model.graph.initializer):
        return ""
    return (
        f" (a bf16 graph, and this onnxruntime has no bf16 kernels for it: build and verify its TensorRT engine on a GPU,"
        f" `segdeploy build-engine --onnx {path}` then `segdeploy verify --engine <plan>`; here, `segdeploy verify --onnx {path} --backend onnx-reference`"
        f" runs it slowly, or export --precision fp16 to run it on onnxruntime)"
    )
