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
    out: Annotated[Optional[Path], typer.Option(help="Output file (default: export/<variant>_<mask-output>_opset<N>.onnx).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the export report as JSON.")] = None,
) -> None:
    """Export the decoder to an ONNX graph with dynamic prompt and point counts."""
    from segdeploy.export import ExportOptions, export_onnx

    options = ExportOptions(
        variant=variant.value, checkpoint=checkpoint, seed=seed, opset=opset,
        mask_output=mask_output, postprocess=postprocess, out=out,
    )
    with spinner_progress("export") as (step, _):
        result = export_onnx(options, step)
    typer.echo(f"weights: {result.weights.description}")
    if result.weights.seed is not None:
        typer.echo("note: no checkpoint given, so the graph holds seeded random weights (recorded in its metadata)")
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
