"""The typer CLI: each command calls one library function and renders its report."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer

from segdeploy import __version__, contract
from segdeploy.contract import MaskOutput
from segdeploy.errors import BadInputError, SegdeployError
from segdeploy.forms import AttentionForm, Precision, Target, UpscaleForm

app = typer.Typer(
    help="Export SAM-style prompt encoder + mask decoder to ONNX (and TensorRT), and prove the result "
    "equal to the eager PyTorch model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Variant = enum.Enum("Variant", {name: name for name in contract.VARIANT_NAMES}, type=str)  # type: ignore[misc]
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
def main(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """segdeploy: SAM mask-decoder deployment."""


@app.command()
def export(
    variant: Annotated[Variant, typer.Option(help="SAM variant the weights belong to (recorded in metadata).")] = Variant(contract.DEFAULT_VARIANT),
    checkpoint: Annotated[Optional[Path], typer.Option(help="SAM/MobileSAM checkpoint (.pth/.pt) or .safetensors; none: seeded random weights.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random weights when no checkpoint is given.")] = 0,
    opset: Annotated[int, typer.Option(help=f"ONNX opset, {contract.MIN_OPSET} or newer.")] = contract.MIN_OPSET,
    mask_output: Annotated[MaskOutput, typer.Option(help="multi: tokens 1..3 (M=3); single: token 0; all: tokens 0..3.")] = MaskOutput.MULTI,
    postprocess: Annotated[bool, typer.Option(help="Include orig_im_size and the full-size `masks` output.")] = True,
    target: Annotated[Target, typer.Option(help="Runtime the graph form is chosen for (see --attention/--upscale).")] = Target.ONNXRUNTIME,
    attention: Annotated[Optional[AttentionForm], typer.Option(help="Attention form; default: the target's (onnxruntime: fewtoken, tensorrt: plain).")] = None,
    upscale: Annotated[Optional[UpscaleForm], typer.Option(help="Upscaling form; default: the target's (onnxruntime: matmul, tensorrt: convtranspose).")] = None,
    precision: Annotated[Precision, typer.Option(help="Typed graph: matrix work in this type, LayerNorm/softmax in fp32, I/O float32.")] = Precision.FP32,
    out: Annotated[Optional[Path], typer.Option(help="Output file (default: export/<variant>_<mask-output>[_<precision>]_<target>_opset<N>.onnx).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the export report as JSON.")] = None,
) -> None:
    """Export the decoder to an ONNX graph with dynamic prompt and point counts."""
    from segdeploy.export import ExportOptions, export_onnx

    options = ExportOptions(
        variant=variant.value, checkpoint=checkpoint, seed=seed, opset=opset,
        mask_output=mask_output, postprocess=postprocess, out=out,
        target=target, attention=attention, upscale=upscale, precision=precision,
    )
    with spinner_progress("export") as (step, _):
        result = export_onnx(options, step)
    typer.echo(f"weights: {result.weights.description}")
    if result.weights.seed is not None:
        typer.echo("note: no checkpoint given, so the graph holds seeded random weights (recorded in its metadata)")
    typer.echo(f"form: {result.form}")
    typer.echo(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, opset {result.opset}, {result.node_count} nodes) in {result.seconds:.1f}s")
    if report:
        write_json(report, result.to_dict())


@app.command()
def verify(
    onnx: Annotated[Optional[Path], typer.Option(help="Graph to verify (default: the newest under export/).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="The checkpoint the graph was exported from (checked by sha256).")] = None,
    cases: Annotated[Optional[int], typer.Option(help="Number of cases, cycling through the matrix (default: each row once).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the case draws (default: fresh, printed for reruns).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="onnxruntime intra-op threads (default: runtime's choice).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the full report as JSON.")] = None,
) -> None:
    """Compare the graph with the eager model on the case matrix; exit 1 on a mismatch."""
    from segdeploy.verify import VerifyOptions, render_report, verify_graph

    path = onnx or call(newest_export)
    options = VerifyOptions(onnx=path, checkpoint=checkpoint, cases=cases, seed=seed, threads=threads)
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
    backend: Annotated[list[str], typer.Option(help="Backend(s): onnxruntime, torch, tensorrt. Repeat the option for several.")] = ["onnxruntime"],  # noqa: B006
    prompts: Annotated[str, typer.Option(help="Prompts per call (B) to sweep.")] = "1,4,16,64",
    points: Annotated[str, typer.Option(help="Point slots per prompt (N, padding point included) to sweep.")] = "2,6",
    orig_size: Annotated[str, typer.Option(help="orig_im_size as HxW.")] = "1024x1024",
    threads: Annotated[int, typer.Option(help="Threads for every backend (onnxruntime intra-op, torch).")] = 2,
    runs: Annotated[int, typer.Option(help="Timed calls per backend and cell, after warm-up.")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed calls per backend and cell.")] = 2,
    baseline: Annotated[Optional[str], typer.Option(help="'official': export segment-anything's SamOnnxModel from the same weights and run it beside ours (one prompt per call); or a path to such a graph.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="The checkpoint the graph was exported from (torch backend, official baseline).")] = None,
    engine: Annotated[Optional[Path], typer.Option(help="TensorRT plan for --backend tensorrt.")] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the JSON, CSV and PNG go.")] = Path("benchmarks/results"),
    name: Annotated[str, typer.Option(help="File name stem of the results.")] = "bench",
) -> None:
    """Measure latency per prompt over prompts per call and points per prompt."""
    from segdeploy.bench import BenchOptions, render_bench, run_bench

    options = BenchOptions(
        onnx=onnx or call(newest_export), backends=tuple(backend), prompts=parse_int_list(prompts, "--prompts"),
        points=parse_int_list(points, "--points"), orig_size=parse_size(orig_size), threads=threads, runs=runs,
        warmup=warmup, baseline=baseline, checkpoint=checkpoint, engine=engine, out_dir=out_dir, name=name,
    )
    with spinner_progress("bench") as (_, count):
        result = run_bench(options, count)
    typer.echo(render_bench(result))
