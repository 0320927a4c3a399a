"""Building a runner for a backend name, the one place verify and bench choose backends."""

from __future__ import annotations

from pathlib import Path

from segdeploy.contract import GraphLayout
from segdeploy.errors import BadInputError
from segdeploy.runners.base import Runner


def make_runner(
    backend: str,
    onnx: Path,
    metadata: dict[str, str],
    layout: GraphLayout,
    *,
    threads: int | None = None,
    checkpoint: Path | None = None,
    engine: Path | None = None,
) -> Runner:
    """A runner of the graph at ``onnx`` (or of its TensorRT ``engine``) on ``backend``, whose
    inputs and outputs are ``layout``'s; a graph with the official signature is run one prompt per
    call under this contract's feeds."""
    runner = _runner(backend, onnx, metadata, layout, threads=threads, checkpoint=checkpoint, engine=engine)
    if layout.official:
        from segdeploy.runners.prompt_by_prompt import PromptByPromptRunner

        return PromptByPromptRunner(runner, layout)
    return runner


def _runner(
    backend: str, onnx: Path, metadata: dict[str, str], layout: GraphLayout, *,
    threads: int | None, checkpoint: Path | None, engine: Path | None,
) -> Runner:
    inputs, outputs = layout.inputs(), layout.output_names()
    if backend == "onnxruntime":
        from segdeploy.runners.ort_runner import OrtRunner

        return OrtRunner(onnx, inputs, outputs, threads=threads)
    if backend == "torch":
        from segdeploy.provenance import resolve_weights
        from segdeploy.runners.torch_runner import TorchRunner

        decoder, _ = resolve_weights(metadata, checkpoint, onnx)
        return TorchRunner(decoder, layout)
    if backend == "onnx-reference":
        from segdeploy.runners.reference_runner import ReferenceRunner

        return ReferenceRunner(onnx, inputs, outputs)
    if backend == "aoti":
        if engine is None:
            raise BadInputError("the aoti backend needs --engine PACKAGE.pt2 (build one with `segdeploy build-engine --runtime aoti`)")
        from segdeploy.runners.aoti_runner import AotiRunner

        return AotiRunner(engine, inputs, outputs)
    if backend == "tensorrt":
        if engine is None:
            raise BadInputError("the tensorrt backend needs --engine PLAN (build one with `segdeploy build-engine`)")
        from segdeploy.runners.trt_runner import TrtRunner

        return TrtRunner(engine, inputs, outputs)
    raise BadInputError(f"unknown backend {backend!r}")
