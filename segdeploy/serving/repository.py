"""`segdeploy triton-repo`: a model repository for a stock Triton server (NVIDIA's container).

- ``--backend python``: the model `segdeploy serve` runs (segdeploy.Decoder in Triton's Python backend,
  requests in image coordinates, dynamic batching across images); the server's Python needs segdeploy.
- ``--backend onnxruntime`` / ``tensorrt``: the exported graph or built plan as Triton's own backends
  run it, with the contract's names, dtypes and dims. The image embedding is shared by a call's
  prompts (or indexed, in the multi-image flavor), so Triton's batch axis cannot be the prompt axis:
  ``max_batch_size`` is 0 and clients send whole contract calls (prompts batched client-side).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segdeploy.errors import BadInputError
from segdeploy.graph_io import write_atomically
from segdeploy.serving.model_config import MODEL_NAME, contract_tensors, render_config
from segdeploy.serving.server import DEFAULT_STORE_BYTES, ServeOptions, write_repository

BACKENDS = ("python", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class RepoOptions:
    source: Path
    out: Path
    backend: str = "python"
    max_batch_size: int = 64
    max_queue_delay_us: int | None = 2000
    instances: int = 1
    kind: str = "KIND_CPU"
    threads: int | None = None
    image_store: str = "shared"
    image_store_bytes: int = DEFAULT_STORE_BYTES
    encoder: Path | None = None


@dataclass
class RepoReport:
    folder: Path
    config: Path
    files: list[Path]
    notes: list[str]


def _layout_of(source: Path):
    """The graph's (or the plan's ONNX source's, or the AOTInductor package's) layout."""
    from segdeploy.graph_io import load_graph, read_metadata
    from segdeploy.provenance import graph_layout

    if source.suffix == ".pt2":
        from segdeploy.aoti.sidecar import read_sidecar

        return read_sidecar(source).layout
    if source.suffix == ".plan":
        from segdeploy.tensorrt.sidecar import read_sidecar

        source = Path(read_sidecar(source).onnx_path)
    layout, _ = graph_layout(read_metadata(load_graph(source)), source)
    return layout


def write_triton_repo(options: RepoOptions) -> RepoReport:
    """Write ``options.out/sam_decoder/{config.pbtxt, 1/...}``; refuses to overwrite a non-empty model folder."""
    if options.backend not in BACKENDS:
        raise BadInputError(f"--backend takes {', '.join(BACKENDS)}, got {options.backend!r}")
    if options.kind not in ("KIND_CPU", "KIND_GPU"):
        raise BadInputError(f"--kind takes KIND_CPU or KIND_GPU, got {options.kind!r}")
    source = Path(options.source)
    if not source.is_file():
        raise BadInputError(f"model not found: {source}")
    wanted = {"onnxruntime": ".onnx", "tensorrt": ".plan"}.get(options.backend)
    if wanted and source.suffix != wanted:
        raise BadInputError(f"--backend {options.backend} takes a {wanted} file, got {source.name}")
    out = Path(options.out)
    command = f"segdeploy triton-repo {source}"
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out} is a file, and a model repository is a folder; e.g. `{command} --out {out.with_suffix('')}_repo`")
    if options.instances < 1:
        raise BadInputError(f"--instances {options.instances}: Triton needs at least 1 instance; e.g. `{command} --instances 1`")
    if options.backend == "python" and options.max_batch_size < 1:
        raise BadInputError(
            f"--max-batch-size {options.max_batch_size}: the python backend batches requests dynamically, which Triton refuses at "
            f"max_batch_size 0; e.g. `{command} --max-batch-size 64`"
        )
    if options.max_queue_delay_us is not None and options.max_queue_delay_us < 0:
        raise BadInputError(f"--max-queue-delay-us takes 0 or more microseconds, got {options.max_queue_delay_us}")
    model = out / MODEL_NAME
    if model.exists() and any(model.iterdir()):
        raise BadInputError(f"{model} exists and is not empty; choose another --out")
    layout = _layout_of(source)
    if layout.official and options.backend == "python":
        raise BadInputError(
            f"{source} has the official export's signature, which segdeploy.Decoder (the python backend's model) does not load; "
            f"serve a graph exported without --signature official, or this one as it is with `{command} --backend onnxruntime`"
        )
    version = model / "1"
    try:
        version.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot write {version}: {exc.strerror or exc}") from None
    notes = []
    if options.backend == "python":
        if options.encoder is not None and not Path(options.encoder).is_file():
            raise BadInputError(f"encoder not found: {options.encoder}")
        originals = [source, source.with_suffix(".json")] if source.suffix in (".plan", ".pt2") else [source]
        originals += [Path(options.encoder)] if options.encoder is not None else []
        copies = [version / original.name for original in originals]  # an engine's sidecar goes along: Decoder.load checks it
        for original, copy in zip(originals, copies):
            write_atomically(copy, copy_from=original)  # readable by the server as the umask gives, whatever the source's mode
        serve = ServeOptions(source=Path(source.name), threads=options.threads, max_batch_size=options.max_batch_size,
                             max_queue_delay_us=options.max_queue_delay_us, instances=options.instances,
                             image_store=options.image_store, image_store_bytes=options.image_store_bytes,
                             encoder=None if options.encoder is None else Path(Path(options.encoder).name))
        write_repository(Path(options.out), serve, python_paths=None, kind=options.kind)
        config = model / "config.pbtxt"
        notes.append("the server's Python needs segdeploy installed (pip install segdeploy) for the Python-backend model")
        files = [config, version / "model.py", *copies]
    else:
        target = version / ("model.onnx" if options.backend == "onnxruntime" else "model.plan")
        write_atomically(target, copy_from=source)
        text = render_config(
            backend=options.backend, inputs=contract_tensors(layout.inputs(), options.backend == "tensorrt"), outputs=contract_tensors(layout.outputs()),
            max_batch_size=0, queue_delay_us=None, instances=options.instances, kind=options.kind,
        )
        config = model / "config.pbtxt"
        write_atomically(config, text.encode())
        notes.append("max_batch_size 0: a call's prompts share one image embedding, so clients batch prompts themselves (or use --backend python for cross-request batching)")
        files = [config, target]
    return RepoReport(Path(options.out), config, files, notes)
