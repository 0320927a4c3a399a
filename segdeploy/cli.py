"""The typer CLI: each command calls one library function and renders its report."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer
from typer.core import TyperGroup

from segdeploy import contract
from segdeploy.version import __version__
from segdeploy.contract import MaskOutput, Signature
from segdeploy.errors import BadInputError, SegdeployError
from segdeploy.limits import DEFAULT_BENCH_CALL_BYTES, MAX_CASES, MAX_PROMPTS, MAX_RUNS, MAX_SEED, MAX_THREADS
from segdeploy.forms import AttentionForm, Precision, Target, UpscaleForm
from segdeploy.registry import all_variants, default_variant, families

class OneLineErrors(TyperGroup):
    """Usage errors of a command (an option out of its range, a bad choice, a missing argument) are
    one ``error:`` line on stderr and exit 2, like every other user mistake."""

    def invoke(self, ctx):
        try:
            from typer._click.exceptions import UsageError  # the click typer vendors (newer typer)
        except ImportError:
            from click.exceptions import UsageError

        try:
            return super().invoke(ctx)
        except UsageError as error:
            typer.echo(f"error: {error.format_message()}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=OneLineErrors,
    help="Export SAM-style prompt encoder + mask decoder to ONNX (and TensorRT), and prove the result "
    "equal to the eager PyTorch model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: rich markup would eat brackets, e.g. segdeploy[serve]
)

Variant = enum.Enum("Variant", {name: name for name in all_variants()}, type=str)  # type: ignore[misc]
FAMILIES_HELP = "; ".join(f"{family.title} ({family.name} family): {', '.join(family.variant_names)}" for family in families())
T = TypeVar("T")


def fail(error: SegdeployError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(error.exit_code)


def call(function: Callable[..., T], *args, **kwargs) -> T:
    """Run a library call; a SegdeployError becomes one stderr line and its exit code."""
    try:
        return function(*args, **kwargs)
    except SegdeployError as error:
        raise fail(error) from None


@contextmanager
def spinner_progress(description: str):
    """A transient progress display on stderr; yields (step_callback, count_callback).

    A SegdeployError raised inside is reported after the display is gone.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    try:
        if not console.is_terminal:  # logs and pipes get no redraw noise
            yield (lambda _message: None), (lambda _done, _total, _message: None)
            return
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        ) as progress:
            task = progress.add_task(description, total=None)

            def step(message: str) -> None:
                progress.update(task, description=f"{description}: {message}")

            def count(done: int, total: int, message: str) -> None:
                progress.update(task, completed=done, total=total, description=f"{description}: {message}")

            yield step, count
    except SegdeployError as error:
        raise fail(error) from None


def write_json(path: Path, data: dict) -> None:
    from segdeploy.graph_io import write_atomically

    write_atomically(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def newest_export(folder: Path = Path("export")) -> Path:
    candidates = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise BadInputError(f"no ONNX file under {folder}/; run `segdeploy export` first or pass --onnx")
    return candidates[-1]


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"segdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """segdeploy: SAM mask-decoder deployment."""


@app.command()
def export(
    variant: Annotated[Variant, typer.Option(help=f"Variant the weights belong to (recorded in metadata). {FAMILIES_HELP}.")] = Variant(default_variant()),
    checkpoint: Annotated[Optional[Path], typer.Option(help="SAM/MobileSAM/SAM 2 checkpoint (.pth/.pt) or .safetensors; none: seeded random weights.")] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the random weights when no checkpoint is given.")] = 0,
    opset: Annotated[int, typer.Option(help=f"ONNX opset: {contract.MIN_OPSET}..20, or 23 with --attention onnx.")] = contract.MIN_OPSET,
    mask_output: Annotated[MaskOutput, typer.Option(help="multi: tokens 1..3 (M=3); single: token 0 (SAM 2: the predictor's stability-based choice among tokens 0..3); all: tokens 0..3; best: the official export's one-mask choice (--signature official only; HQ-SAM's official signature takes single or best).")] = MaskOutput.MULTI,
    postprocess: Annotated[Optional[bool], typer.Option("--postprocess/--no-postprocess", help="Include orig_im_size and the full-size `masks` output (default: on; off with --multi-image).", show_default=False)] = None,
    target: Annotated[Target, typer.Option(help="Runtime the graph form is chosen for (see --attention/--upscale).")] = Target.ONNXRUNTIME,
    attention: Annotated[Optional[AttentionForm], typer.Option(help="Attention form; default: the target's (onnxruntime: fewtoken, tensorrt: plain). onnx: the Attention operator, needs --opset 23.")] = None,
    upscale: Annotated[Optional[UpscaleForm], typer.Option(help="Upscaling form; default: the target's (onnxruntime: matmul, tensorrt: convtranspose; matmul at bf16, since ONNX ConvTranspose takes bf16 only from opset 22). convtranspose at bf16 needs --attention onnx --opset 23.")] = None,
    precision: Annotated[Precision, typer.Option(help="Typed graph: matrix work in this type, LayerNorm/softmax in fp32, I/O float32.")] = Precision.FP32,
    signature: Annotated[Signature, typer.Option(help="segdeploy: this contract (prompt batches); official: segment-anything's SamOnnxModel inputs and outputs (float orig_im_size, one prompt per call), a drop-in for its clients.")] = Signature.SEGDEPLOY,
    multi_image: Annotated[bool, typer.Option("--multi-image", help="The multi-image flavor: image_embeddings [I,256,64,64] plus a per-prompt image_index; masks are resized on the host.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Output file (default: export/<variant>_<mask-output>[_multiimage][_<precision>]_<target>_opset<N>.onnx).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the export report as JSON.")] = None,
    family_option: Annotated[Optional[list[str]], typer.Option("--family-option", help="NAME=VALUE: an export-time choice of the variant's family, recorded in metadata (see README).")] = None,
) -> None:
    """Export the decoder to an ONNX graph with dynamic prompt and point counts."""
    from segdeploy.export import ExportOptions, export_onnx

    pairs = [item.partition("=") for item in family_option or []]
    if any(not sep or not name for name, sep, _ in pairs):
        raise BadInputError(f"--family-option takes NAME=VALUE, got {family_option}")
    options = ExportOptions(
        family_options=tuple((name, value) for name, _, value in pairs),
        variant=variant.value, checkpoint=checkpoint, seed=seed, opset=opset,
        mask_output=mask_output, postprocess=postprocess, out=out,
        target=target, attention=attention, upscale=upscale, precision=precision, multi_image=multi_image,
        signature=signature,
    )
    with spinner_progress("export") as (step, _):
        result = export_onnx(options, step)
    typer.echo(f"weights: {result.weights.description}")
    if result.weights.seed is not None:
        typer.echo("note: no checkpoint given, so the graph holds seeded random weights (recorded in its metadata)")
    typer.echo(f"form: {result.form}" + (f" ({result.form_note})" if result.form_note else ""))
    typer.echo(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, opset {result.opset}, {result.node_count} nodes) in {result.seconds:.1f}s")
    if report:
        write_json(report, result.to_dict())


@app.command()
def verify(
    onnx: Annotated[Optional[Path], typer.Option(help="Graph to verify (default: the newest under export/).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="The checkpoint the graph was exported from (checked by sha256).")] = None,
    cases: Annotated[Optional[int], typer.Option(min=1, max=MAX_CASES, help="Number of cases, cycling through the matrix (default: each row once).")] = None,
    seed: Annotated[Optional[int], typer.Option(min=0, max=MAX_SEED, help="Seed of the case draws (default: fresh, printed for reruns).")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, max=MAX_THREADS, help="onnxruntime intra-op threads (default: runtime's choice).")] = None,
    engine: Annotated[Optional[Path], typer.Option(help="Verify this TensorRT plan or AOTInductor .pt2 package (built from --onnx, default: the one its sidecar names) instead of onnxruntime.")] = None,
    backend: Annotated[str, typer.Option(help="What runs the graph: onnxruntime, or onnx-reference (ONNX's own numpy evaluator: slow, but it runs bf16 graphs, which onnxruntime's CPU provider cannot).")] = "onnxruntime",
    max_side: Annotated[Optional[int], typer.Option(min=1, help="Shrink every row's original image to at most this side (aspect kept): the whole matrix, with less resizing.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the full report as JSON.")] = None,
) -> None:
    """Compare the graph (or its TensorRT engine) with the eager model on the case matrix; exit 1 on a mismatch."""
    from segdeploy.verify import VerifyOptions, render_report, verify_graph

    if engine is not None and onnx is None:
        from segdeploy.verify import read_engine_sidecar

        onnx = Path(call(read_engine_sidecar, engine).onnx_path)
    path = onnx or call(newest_export)
    options = VerifyOptions(onnx=path, checkpoint=checkpoint, cases=cases, seed=seed, threads=threads, engine=engine, backend=backend, max_side=max_side)
    with spinner_progress("verify") as (_, count):
        result = verify_graph(options, count)
    typer.echo(render_report(result))
    if report:
        write_json(report, result.to_dict())
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="An ONNX file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show the I/O contract and metadata of an exported graph."""
    from segdeploy.info import describe_graph, render_info

    result = call(describe_graph, path)
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_info(result))


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise fail(BadInputError(f"{option} takes comma-separated integers, got {text!r}")) from None
    if not values or min(values) < 1:
        raise fail(BadInputError(f"{option} takes positive integers, got {text!r}"))
    return values


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise fail(BadInputError(f"--orig-size takes HxW, e.g. 1024x1024; got {text!r}"))
    return int(parts[0]), int(parts[1])


@app.command()
def bench(
    onnx: Annotated[Optional[Path], typer.Option(help="Graph to measure (default: the newest under export/).")] = None,
    backend: Annotated[list[str], typer.Option(help="Backend(s): onnxruntime, torch, tensorrt, aoti. Repeat the option for several.")] = ["onnxruntime"],  # noqa: B006
    prompts: Annotated[str, typer.Option(help="Prompts per call (B) to sweep.")] = "1,4,16,64",
    points: Annotated[str, typer.Option(help="Point slots per prompt (N, padding point included) to sweep.")] = "2,6",
    orig_size: Annotated[str, typer.Option(help="orig_im_size as HxW.")] = "1024x1024",
    threads: Annotated[int, typer.Option(min=1, max=MAX_THREADS, help="Threads for every backend (onnxruntime intra-op, torch).")] = 2,
    runs: Annotated[int, typer.Option(min=1, max=MAX_RUNS, help="Timed calls per backend and cell, after warm-up.")] = 10,
    warmup: Annotated[int, typer.Option(min=0, max=MAX_RUNS, help="Untimed calls per backend and cell (and, if > 0, a 2 s burn-in first).")] = 3,
    baseline: Annotated[Optional[str], typer.Option(help="'official': export segment-anything's SamOnnxModel from the same weights and run it beside ours (one prompt per call); or a path to such a graph.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="The checkpoint the graph was exported from (torch backend, official baseline).")] = None,
    engine: Annotated[Optional[Path], typer.Option(help="TensorRT plan for --backend tensorrt, .pt2 package for --backend aoti.")] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the JSON, CSV and PNG go.")] = Path("benchmarks/results"),
    name: Annotated[str, typer.Option(help="File name stem of the results.")] = "bench",
    images: Annotated[int, typer.Option(min=1, max=MAX_PROMPTS, help="Multi-image graphs: spread each call's prompts over this many images.")] = 1,
    floor: Annotated[bool, typer.Option("--floor/--no-floor", help="Measure each cell's floor on this machine (one MatMul with the graph's matrix FLOPs + the Resize of the masks to the original size, interleaved with the graph) and report ours as a ratio of it.")] = True,
    max_call_bytes: Annotated[str, typer.Option(help="Refuse a sweep whose largest call (all of --prompts in one batch) would need more memory than this, estimated, e.g. 8GiB.")] = f"{DEFAULT_BENCH_CALL_BYTES >> 30}GiB",
) -> None:
    """Measure latency per prompt over prompts per call and points per prompt."""
    from segdeploy.bench import BenchOptions, render_bench, run_bench
    from segdeploy.serving.image_store import parse_size as parse_bytes

    options = BenchOptions(
        onnx=onnx or call(newest_export), backends=tuple(backend), prompts=parse_int_list(prompts, "--prompts"),
        points=parse_int_list(points, "--points"), orig_size=parse_size(orig_size), threads=threads, runs=runs,
        warmup=warmup, baseline=baseline, checkpoint=checkpoint, engine=engine, out_dir=out_dir, name=name, images=images, floor=floor,
        max_call_bytes=call(parse_bytes, max_call_bytes),
    )
    with spinner_progress("bench") as (_, count):
        result = run_bench(options, count)
    typer.echo(render_bench(result))


@app.command("build-engine")
def build_engine_command(
    onnx: Annotated[Optional[Path], typer.Option(help="Graph from `segdeploy export` (default: the newest under export/).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Plan path (default: engines/<graph>_<precision>.plan); the sidecar goes beside it as .json.")] = None,
    prompts: Annotated[str, typer.Option(help="Prompts per call, MIN:OPT:MAX.")] = "1:16:64",
    points: Annotated[str, typer.Option(help="Point slots per prompt, MIN:OPT:MAX.")] = "1:4:16",
    orig_size: Annotated[str, typer.Option(help="orig_im_size values, MIN:OPT:MAX, each N or HxW.")] = "16:1024:4096",
    images: Annotated[str, typer.Option(help="Multi-image graphs: images per call, MIN:OPT:MAX.")] = "1:4:16",
    fp16: Annotated[bool, typer.Option("--fp16", help="Build at fp16.")] = False,
    bf16: Annotated[bool, typer.Option("--bf16", help="Build at bf16.")] = False,
    fp32: Annotated[bool, typer.Option("--fp32", help="Build at fp32 (default for fp32 graphs).")] = False,
    tf32: Annotated[bool, typer.Option(help="Allow TF32 for fp32 matrix work.")] = True,
    timing_cache: Annotated[Optional[Path], typer.Option(help="Timing cache to load and update (valid for one TensorRT version).")] = None,
    opt_level: Annotated[int, typer.Option(min=0, max=5, help="Builder optimization level 0..5.")] = 3,
    hardware_compat: Annotated[str, typer.Option(help="none, ampere+ or same-cc.")] = "none",
    version_compatible: Annotated[bool, typer.Option(help="Build a version-compatible engine (embeds a lean runtime; slower).")] = False,
    workspace: Annotated[Optional[int], typer.Option(min=1, max=1 << 20, help="Workspace memory pool limit in MiB.")] = None,
    print_trtexec: Annotated[bool, typer.Option("--print-trtexec", help="Print the equivalent trtexec command and exit (needs no TensorRT).")] = False,
    trt_version: Annotated[Optional[str], typer.Option(help="TensorRT version --print-trtexec writes for (default: the installed one, else 10.14).")] = None,
    weak_typing: Annotated[bool, typer.Option("--weak-typing", help="TensorRT 10 only: build an fp32 graph at --fp16/--bf16 weakly typed instead of refusing it.")] = False,
    allow_lint_errors: Annotated[bool, typer.Option("--allow-lint-errors", help="Build even when `segdeploy lint` finds errors in the graph.")] = False,
    runtime: Annotated[str, typer.Option(help="tensorrt (a .plan), or aoti (a PyTorch AOTInductor .pt2 package, CPU or CUDA).")] = "tensorrt",
    device: Annotated[str, typer.Option(help="aoti only: cpu or cuda.")] = "cpu",
    checkpoint: Annotated[Optional[Path], typer.Option(help="aoti only: the checkpoint the graph was exported from (checked by sha256).")] = None,
) -> None:
    """Build a TensorRT engine (or an AOTInductor package) with dynamic prompt and point counts, plus its JSON sidecar."""
    from segdeploy.tensorrt.builder import build_engine, plan_options
    from segdeploy.tensorrt.lint import DEFAULT_TRT_VERSION
    from segdeploy.tensorrt.profiles import EngineProfile, parse_range, parse_size_range
    from segdeploy.tensorrt.trtexec import HARDWARE_COMPAT, trtexec_command

    if sum((fp16, bf16, fp32)) > 1:
        raise fail(BadInputError("choose one of --fp16, --bf16, --fp32"))
    if hardware_compat not in HARDWARE_COMPAT:
        raise fail(BadInputError(f"--hardware-compat takes {', '.join(HARDWARE_COMPAT)}; got {hardware_compat!r}"))
    profile = EngineProfile(
        prompts=call(parse_range, prompts, "--prompts"),
        points=call(parse_range, points, "--points"),
        orig_size=call(parse_size_range, orig_size),
        images=call(parse_range, images, "--images"),
    )
    requested = Precision.FP16 if fp16 else Precision.BF16 if bf16 else Precision.FP32 if fp32 else None
    graph = onnx or call(newest_export)
    if runtime == "aoti":
        _build_aoti(graph, out, device, requested, profile, checkpoint, tf32, print_trtexec)
        return
    if runtime != "tensorrt":
        raise fail(BadInputError(f"--runtime takes tensorrt or aoti, got {runtime!r}"))
    settings = dict(
        profile=profile, tf32=tf32, timing_cache=timing_cache, opt_level=opt_level,
        hardware_compat=hardware_compat, version_compatible=version_compatible, workspace_mib=workspace,
        weak_typing=weak_typing, allow_lint_errors=allow_lint_errors,
    )
    if print_trtexec:
        version = trt_version or _installed_trt_version() or DEFAULT_TRT_VERSION
        options = call(plan_options, graph, out, requested, version, **settings)
        _warn_lint_errors(options.lint_errors)
        typer.echo(trtexec_command(options))
        return
    from segdeploy.tensorrt.environment import require_tensorrt

    # a graph that should not build is refused (with the export command that fixes it) before TensorRT is looked for
    call(plan_options, graph, out, requested, _installed_trt_version() or DEFAULT_TRT_VERSION, **settings)
    env = call(require_tensorrt)
    options = call(plan_options, graph, out, requested, env.tensorrt_version, **settings)
    _warn_lint_errors(options.lint_errors)
    with spinner_progress("build-engine") as (step, _):
        result = build_engine(options, step)
    typer.echo(f"built {result.plan} ({result.info.precision}, {result.info.typing}ly typed, TensorRT {result.info.tensorrt_version} on {result.info.gpu_name}) in {result.seconds:.0f}s")
    typer.echo(f"sidecar {result.sidecar}")
    typer.echo(f"trtexec equivalent: {result.trtexec}")


def _build_aoti(graph: Path, out: Optional[Path], device: str, requested: Optional[Precision], profile, checkpoint: Optional[Path], tf32: bool, print_trtexec: bool) -> None:
    from segdeploy.aoti.builder import build_package, plan_package

    if print_trtexec:
        raise fail(BadInputError("--print-trtexec is for the TensorRT runtime"))
    options = call(
        plan_package, graph, out, device, requested,
        prompts=profile.prompts, points=profile.points, images=profile.images, checkpoint=checkpoint, tf32=tf32,
    )
    with spinner_progress("build-engine --runtime aoti") as (step, _):
        result = build_package(options, step)
    typer.echo(f"built {result.package} ({result.info.precision} on {result.info.device}, torch {result.info.torch_version}) in {result.seconds:.0f}s")
    typer.echo(f"sidecar {result.sidecar}")


def _warn_lint_errors(errors: tuple[str, ...]) -> None:
    if errors:
        typer.echo(f"warning: building despite {len(errors)} TensorRT lint error(s) (--allow-lint-errors): {', '.join(errors)}", err=True)


def _installed_trt_version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        return None


@app.command()
def lint(
    path: Annotated[Path, typer.Argument(help="An ONNX file.")],
    target: Annotated[str, typer.Option(help="Runtime to lint for (tensorrt).")] = "tensorrt",
    trt_version: Annotated[Optional[str], typer.Option(help="TensorRT version to check operator support against (default 10.14).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Find what keeps a graph from building or fusing in TensorRT (runs without TensorRT); exit 1 on errors."""
    from segdeploy.tensorrt.lint import DEFAULT_TRT_VERSION, lint_graph, render_lint

    if target != "tensorrt":
        raise fail(BadInputError(f"lint knows the tensorrt target only, got {target!r}"))
    result = call(lint_graph, path, trt_version or DEFAULT_TRT_VERSION)
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_lint(result))
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def inspect(
    plan: Annotated[Path, typer.Argument(help="A TensorRT plan built by `segdeploy build-engine`.")],
    onnx: Annotated[Optional[Path], typer.Option(help="The graph it was built from (default: the sidecar's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Layers, tactics and fusion verdicts (attention blocks, upscaling) of an engine."""
    from segdeploy.tensorrt.inspect_engine import inspect_engine, render_inspect

    result = call(inspect_engine, plan, onnx)
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_inspect(result))


@app.command()
def serve(
    model: Annotated[Optional[Path], typer.Argument(help="What to serve: anything Decoder.load takes (.onnx, .plan, .pt2, a checkpoint); none: seeded random weights on eager PyTorch.")] = None,
    backend: Annotated[str, typer.Option(help="auto, onnxruntime, torch, tensorrt or aoti (as Decoder.load).")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="Threads of the backend (onnxruntime intra-op, torch).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="The checkpoint an .onnx graph was exported from, for --backend torch.")] = None,
    address: Annotated[str, typer.Option(help="Address to bind HTTP, gRPC and metrics to.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="KServe v2 HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="KServe v2 gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
    max_batch_size: Annotated[int, typer.Option(help="Most requests (prompts) the dynamic batcher puts in one backend call.")] = 64,
    max_queue_delay_us: Annotated[int, typer.Option(help="How long a request may wait for others to batch with, in microseconds.")] = 2000,
    dynamic_batching: Annotated[bool, typer.Option(help="Batch requests across clients and images (--no-dynamic-batching: every request alone).")] = True,
    instances: Annotated[int, typer.Option(help="Model instances (each loads the decoder).")] = 1,
    image_store: Annotated[str, typer.Option(help="Where registered images live: shared (this server's instances; default), shared:PATH (every server opening PATH on this machine), memory (one instance) or redis://HOST:PORT/DB (several servers).")] = "shared",
    image_store_bytes: Annotated[str, typer.Option(help="The image store's budget (LRU beyond it), e.g. 2GiB or 512MB.")] = "2GiB",
    encoder: Annotated[Optional[Path], typer.Option(help="A SAM image-encoder .onnx ([1,3,1024,1024] float32 in): clients may register images (PNG/JPEG or raw RGB) instead of embeddings.")] = None,
    max_call_bytes: Annotated[Optional[str], typer.Option(help="Memory budget of one decoder call, e.g. 2GiB (default: Decoder's, 2 GiB): each instance splits a dynamic batch into calls whose estimated peak stays under it, and answers the batch in groups whose full-size masks take at most a quarter of it.")] = None,
) -> None:
    """Serve the decoder as `sam_decoder` on Triton Inference Server (KServe v2 HTTP and gRPC), with
    dynamic batching across images and an image store (register an image once, then click by its id);
    Ctrl-C or SIGTERM stops it. Needs `pip install 'segdeploy[serve]'`."""
    import signal

    from segdeploy.serving.image_store import parse_size
    from segdeploy.serving.server import ServeOptions

    options = ServeOptions(
        source=model, backend=backend, threads=threads, checkpoint=checkpoint, address=address, http_port=http_port,
        grpc_port=grpc_port, metrics_port=metrics_port, max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us if dynamic_batching else None, instances=instances,
        image_store=image_store, image_store_bytes=call(parse_size, image_store_bytes), encoder=encoder,
        max_call_bytes=None if max_call_bytes is None else call(parse_size, max_call_bytes),
    )
    def on_signal(_signum, _frame) -> None:
        raise KeyboardInterrupt

    # from the start: a SIGTERM while tritonserver comes up (it may answer ready before start_server
    # returns) stops it as one after would, instead of killing this process outright
    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        _serve_until_stopped(options, model, dynamic_batching, max_batch_size, max_queue_delay_us, image_store, image_store_bytes, encoder)
    except KeyboardInterrupt:  # start_server, or the loop, has stopped the server
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo("stopped")


def _serve_until_stopped(options, model, dynamic_batching, max_batch_size, max_queue_delay_us, image_store, image_store_bytes, encoder) -> None:
    """Start the server, say where it listens, and wait for Ctrl-C/SIGTERM (KeyboardInterrupt) or its end."""
    from segdeploy.serving.server import start_server

    with spinner_progress("serve") as (step, _):
        server = start_server(options, step)
    try:
        typer.echo(f"serving sam_decoder ({model or 'random weights, eager'}) on Triton Inference Server")
        typer.echo(f"  KServe v2 HTTP  http://{server.http_url}/v2/models/sam_decoder")
        typer.echo(f"  KServe v2 gRPC  {server.grpc_url}")
        typer.echo(f"  metrics         {server.metrics_url}")
        batching = f"dynamic batching up to {max_batch_size}, {max_queue_delay_us} us queue delay" if dynamic_batching else "no dynamic batching"
        typer.echo(f"  image store     {image_store} ({image_store_bytes}){'; images by --encoder ' + encoder.name if encoder else ''}")
        typer.echo(f"  {batching}; Ctrl-C or SIGTERM stops it", err=False)
        code = server.wait()
        raise fail(BadInputError(f"tritonserver exited by itself (code {code}): {server.log_tail(1)}"))
    finally:
        server.stop()


@app.command("triton-repo")
def triton_repo(
    model: Annotated[Path, typer.Argument(help="An exported .onnx graph or a built .plan.")],
    out: Annotated[Path, typer.Option(help="Model repository folder to write (sam_decoder/ goes inside).")] = Path("triton_repo"),
    backend: Annotated[str, typer.Option(help="python: segdeploy.Decoder in Triton's Python backend (what `serve` runs; dynamic batching across images); onnxruntime or tensorrt: the graph/plan on Triton's own backend.")] = "python",
    max_batch_size: Annotated[int, typer.Option(help="python backend: most requests per batch.")] = 64,
    max_queue_delay_us: Annotated[int, typer.Option(help="python backend: dynamic batcher queue delay in microseconds.")] = 2000,
    instances: Annotated[int, typer.Option(help="Instances in the instance group.")] = 1,
    kind: Annotated[str, typer.Option(help="KIND_CPU or KIND_GPU.")] = "KIND_CPU",
    image_store: Annotated[str, typer.Option(help="python backend: shared (the instances of the server, in /dev/shm), shared:PATH, memory or redis://HOST:PORT/DB.")] = "shared",
    image_store_bytes: Annotated[str, typer.Option(help="python backend: the image store's budget, e.g. 2GiB.")] = "2GiB",
    encoder: Annotated[Optional[Path], typer.Option(help="python backend: an image-encoder .onnx copied into the repository (registration by image).")] = None,
) -> None:
    """Write a model repository for a stock Triton server (NVIDIA's container)."""
    from segdeploy.serving.image_store import parse_size
    from segdeploy.serving.repository import RepoOptions, write_triton_repo

    options = RepoOptions(source=model, out=out, backend=backend, max_batch_size=max_batch_size,
                          max_queue_delay_us=max_queue_delay_us, instances=instances, kind=kind,
                          image_store=image_store, image_store_bytes=call(parse_size, image_store_bytes), encoder=encoder)
    result = call(write_triton_repo, options)
    typer.echo(f"wrote {result.folder}/sam_decoder ({backend} backend): " + ", ".join(str(p.relative_to(result.folder)) for p in result.files))
    for note in result.notes:
        typer.echo(f"note: {note}")


TORCH_HINT = "pip install 'segdeploy[torch]' (the CPU build: pip install torch==2.13.0)"


def main(prog_name: str | None = None) -> None:
    """The ``segdeploy`` command: the typer app, with PyTorch's absence (export, verify, eager and
    AOTInductor need it; serving an ONNX graph does not) as one line and exit 2."""
    try:
        app(prog_name=prog_name)
    except ModuleNotFoundError as error:
        if error.name != "torch":
            raise
        typer.echo(f"error: this command needs PyTorch, which is not installed here: {TORCH_HINT}", err=True)
        raise SystemExit(2) from None
