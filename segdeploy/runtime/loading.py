"""What ``Decoder.load`` opens: a runner for a graph, engine, package or checkpoint, with the
layout (mask tokens, postprocessing, image flavor) read from the file itself."""

from __future__ import annotations

from pathlib import Path

from segdeploy.contract import GraphLayout, MaskOutput
from segdeploy.errors import BadInputError
from segdeploy.registry import default_variant, families, family_of_variant, layout_from_io, load_decoder
from segdeploy.runners.base import Runner

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


def ort_providers() -> list[str]:
    """CUDA first where onnxruntime-gpu sees a GPU, else the CPU provider."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available else ["CPUExecutionProvider"]


def _eager(decoder, layout: GraphLayout, threads: int | None, device: str) -> Runner:
    from segdeploy.runners.torch_runner import TorchRunner

    if threads:
        import torch

        torch.set_num_threads(threads)
    return TorchRunner(decoder, layout, device=device)


def _open_graph(path: Path, backend: str, threads: int | None, checkpoint: Path | None, device: str) -> tuple[Runner, GraphLayout, dict]:
    from segdeploy.graph_io import load_graph, read_metadata
    from segdeploy.provenance import graph_layout, resolve_weights

    metadata = read_metadata(load_graph(path))
    if not metadata:
        raise BadInputError(f"{path} carries no segdeploy metadata; load a graph made by `segdeploy export`")
    layout, _ = graph_layout(metadata, path)
    if layout.official:
        raise BadInputError(f"{path} has the official export's signature (for existing clients); Decoder loads segdeploy-signature graphs")
    if backend == "torch":
        decoder, _ = resolve_weights(metadata, checkpoint, path)
        return _eager(decoder, layout, threads, device), layout, metadata
    if backend not in ("auto", "onnxruntime"):
        raise BadInputError(f"an .onnx file runs on onnxruntime or torch, not {backend}")
    from segdeploy.runners.ort_runner import OrtRunner

    runner = OrtRunner(path, layout.inputs(), layout.output_names(), threads=threads, providers=ort_providers())
    return runner, layout, metadata


def _open_plan(path: Path, backend: str) -> tuple[Runner, GraphLayout, dict]:
    from segdeploy.runners.trt_runner import TrtRunner
    from segdeploy.tensorrt.sidecar import read_sidecar

    if backend not in ("auto", "tensorrt"):
        raise BadInputError(f"a .plan file runs on tensorrt, not {backend}")
    sidecar = read_sidecar(path)
    known = {s.name for family in families() for flavor in ((True, False), (False, True)) for s in family.layout(MaskOutput.MULTI, *flavor).inputs()}
    inputs = [io["name"] for io in sidecar.io if io["name"] in known]
    outputs = {io["name"]: io["shape"] for io in sidecar.io if io["name"] not in inputs}
    layout = layout_from_io(inputs, outputs)
    return TrtRunner(path, layout.inputs(), layout.output_names()), layout, {"engine": str(path), "precision": sidecar.precision}


def _open_package(path: Path, backend: str) -> tuple[Runner, GraphLayout, dict]:
    from dataclasses import asdict

    from segdeploy.aoti.sidecar import read_sidecar
    from segdeploy.runners.aoti_runner import AotiRunner

    if backend not in ("auto", "aoti"):
        raise BadInputError(f"a .pt2 package runs on aoti, not {backend}")
    sidecar = read_sidecar(path)  # the runner checks torch version and device before loading
    layout = sidecar.layout
    return AotiRunner(path, layout.inputs(), layout.output_names()), layout, asdict(sidecar)


def open_source(
    source: Path | None, backend: str, *, threads: int | None, checkpoint: Path | None, variant: str | None, seed: int, device: str,
) -> tuple[Runner, GraphLayout, dict]:
    """(runner, layout, metadata) for what ``Decoder.load`` was given."""
    if source is None or source.suffix in CHECKPOINT_SUFFIXES:
        if backend not in ("auto", "torch"):
            raise BadInputError(f"{'random weights' if source is None else 'a checkpoint'} run on eager torch; export a graph for {backend}")
        variant = variant or default_variant()
        decoder, weights = load_decoder(variant, source, seed)
        metadata = {"variant": variant, "weights": "checkpoint" if weights.sha256 else "random", "weights_sha256": weights.sha256 or "",
                    "random_seed": "" if weights.seed is None else str(weights.seed)}
        # The eager backend needs no export: it takes all mask tokens and several images, so one
        # loaded model serves both multimask settings and cross-image batches.
        layout = family_of_variant(variant).layout(MaskOutput.ALL, postprocess=False, multi_image=True)
        return _eager(decoder, layout, threads, device), layout, metadata
    if not source.is_file():
        raise BadInputError(f"file not found: {source}")
    if source.suffix == ".onnx":
        return _open_graph(source, backend, threads, checkpoint, device)
    if source.suffix == ".plan":
        return _open_plan(source, backend)
    if source.suffix == ".pt2":
        return _open_package(source, backend)
    raise BadInputError(f"{source}: Decoder.load takes .onnx, .plan, .pt2, .pth/.pt/.safetensors or None")
