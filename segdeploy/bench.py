"""``segdeploy bench``: latency of the decoder graph per backend over prompts per call and points
per prompt, with the official export measured beside it in the same process and thread settings.

Backends are measured in interleaved rounds, so slow drifts of a shared machine hit every backend
alike; in each round a backend's timed call follows an untimed one of its own, so the caches hold its
weights rather than the other backend's (as in a server that runs one model). Reports p50/p90/p99 per call, per-prompt time and prompts/s, and
writes JSON, CSV and a PNG plot."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segdeploy import contract
from segdeploy.version import __version__
from segdeploy.errors import BadInputError
from segdeploy.limits import DEFAULT_BENCH_CALL_BYTES, RequestLimits
from segdeploy.prompts import check_resizable
from segdeploy.graph_io import load_graph, read_metadata, write_atomically
from segdeploy.provenance import graph_layout, resolve_weights
from segdeploy.runners.base import Runner

if TYPE_CHECKING:
    from segdeploy.families.base import Family
    from matplotlib.figure import Figure

BACKENDS = ("onnxruntime", "torch", "tensorrt", "aoti")
DEFAULT_PROMPTS = (1, 4, 16, 64)
DEFAULT_POINTS = (2, 6)
DEFAULT_RESULTS = Path("benchmarks/results")
BURN_IN_SECONDS = 2.0
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BenchOptions:
    onnx: Path
    backends: tuple[str, ...] = ("onnxruntime",)
    prompts: tuple[int, ...] = DEFAULT_PROMPTS
    points: tuple[int, ...] = DEFAULT_POINTS
    orig_size: tuple[int, int] = (1024, 1024)
    threads: int = 2
    runs: int = 10
    warmup: int = 3
    baseline: str | None = None  # None, "official", or a path to an official-format ONNX file
    checkpoint: Path | None = None
    engine: Path | None = None
    out_dir: Path = DEFAULT_RESULTS
    name: str = "bench"
    seed: int = 0
    images: int = 1  # multi-image graphs: prompts spread round-robin over this many images per call
    floor: bool = True  # also measure each cell's floor (segdeploy.floor) and report ratios to it
    max_call_bytes: int = DEFAULT_BENCH_CALL_BYTES  # refuse a sweep whose largest call would need more (estimated)


@dataclass
class BenchRow:
    backend: str
    prompts: int
    points: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    per_prompt_ms: float
    prompts_per_s: float
    ratio_to_baseline: float | None = None  # per-prompt time / the baseline's, same prompts and points
    floor_ms: float | None = None  # --floor: the cell's floor (MatMul with the graph's FLOPs + mask Resize), p50
    ratio_to_floor: float | None = None  # p50 / floor_ms


@dataclass
class BenchReport:
    graph: str
    form: str
    machine: dict
    options: dict
    rows: list[BenchRow] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    floors: list[dict] = field(default_factory=list)  # --floor: FloorReport.to_dict() per cell

    def to_dict(self) -> dict:
        return asdict(self)


def machine_info(threads: int) -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return {
        "cpu": cpu, "cores": os.cpu_count(), "threads": threads, "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__, "segdeploy": __version__,
    }


def bench_feeds(
    prompts: int, points: int, orig_size: tuple[int, int], rng: np.random.Generator, postprocess: bool, images: int | None = None,
    *, family: Family,
) -> dict[str, np.ndarray]:
    """B prompts of N point slots: N-1 clicks and SAM's padding point; no mask input. ``images``
    (multi-image flavor) spreads the prompts round-robin over that many images. ``family`` decides
    the per-image inputs (SAM 2 adds its two high-resolution feature maps)."""
    if points < 1 or prompts < 1:
        raise BadInputError("prompts and points must be at least 1")
    coords = (rng.random((prompts, points, 2)) * contract.MODEL_INPUT_SIZE).astype(np.float32)
    labels = np.ones((prompts, points), np.float32)
    coords[:, -1] = 0.0
    labels[:, -1] = float(contract.Label.PADDING) if points > 1 else 1.0
    feeds = family.image_feeds(rng, images or 1)
    if images is not None:
        feeds["image_index"] = (np.arange(prompts) % images).astype(np.int64)
    feeds |= {
        "point_coords": coords,
        "point_labels": labels,
        "mask_input": np.zeros((prompts, 1, contract.LOW_RES_SIZE, contract.LOW_RES_SIZE), np.float32),
        "has_mask_input": np.zeros(prompts, np.float32),
    }
    if postprocess and images is None:
        feeds["orig_im_size"] = np.array(orig_size, np.int64)
    return feeds


def open_runners(options: BenchOptions, layout: contract.GraphLayout, metadata: dict, scratch: Path) -> dict[str, Runner]:
    """Runners by label: each requested backend, then the baseline (exported into ``scratch``)."""
    from segdeploy.runners.factory import make_runner

    runners: dict[str, Runner] = {}
    for backend in options.backends:
        runners[backend] = make_runner(
            backend, options.onnx, metadata, layout, threads=options.threads, checkpoint=options.checkpoint, engine=options.engine,
        )
    if options.baseline:
        family = layout.family
        if not layout.postprocess:
            raise BadInputError("--baseline compares full outputs; export the graph with postprocessing")
        path = Path(options.baseline)
        if options.baseline == "official":
            decoder, _ = resolve_weights(metadata, options.checkpoint, options.onnx)
            path = family.export_baseline(decoder, scratch / "official.onnx")
        elif not path.is_file():
            raise BadInputError(f"--baseline takes 'official' or an ONNX file; {path} does not exist")
        runners["official"] = baseline_runner(family, path, options.threads)
    return runners


def baseline_runner(family: Family, path: Path, threads: int | None = None) -> Runner:
    """The family's baseline graph at ``path`` on onnxruntime, under the family's contract feeds (one
    prompt per call where the baseline has the official signature)."""
    from segdeploy.runners.factory import make_runner

    runner = make_runner("onnxruntime", path, {}, family.baseline_layout(), threads=threads)
    runner.name = "official-onnx"
    return runner


def quiet_onnxruntime_threads(runners: dict[str, Runner]) -> bool:
    """Where a torch-based backend (torch, aoti) is measured beside onnxruntime in one process, turn off
    onnxruntime's spinning worker threads, which otherwise slow it 3-15x on a small machine."""
    from segdeploy.runners.ort_runner import OrtRunner

    if not {"torch", "aoti"} & set(runners):
        return False
    for runner in runners.values():
        inner = getattr(runner, "inner", runner)
        if isinstance(inner, OrtRunner):
            inner.spinning = False
    return True


def _row(label: str, prompts: int, points: int, times: list[float]) -> BenchRow:
    ms = np.array(times) * 1000.0
    p50, p90, p99 = (float(np.percentile(ms, q)) for q in (50, 90, 99))
    return BenchRow(label, prompts, points, len(ms), p50, p90, p99, p50 / prompts, 1000.0 * prompts / p50)


def run_bench(options: BenchOptions, progress: Progress | None = None) -> BenchReport:
    """Measure every (prompts, points) cell on every runner; write the result files."""
    tick = progress or (lambda *_: None)
    if options.runs < 1 or options.warmup < 0 or options.threads < 1:
        raise BadInputError("--runs and --threads must be at least 1, --warmup at least 0")
    unknown = set(options.backends) - set(BACKENDS)
    if unknown:
        raise BadInputError(f"unknown backend {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    metadata = read_metadata(load_graph(options.onnx))
    layout, precision = graph_layout(metadata, options.onnx)
    limits = RequestLimits()
    limits.check_output_size(check_resizable(tuple(options.orig_size), layout.family.prompt_rules(), "--orig-size: "), "--orig-size: ")
    limits.check_prompts(max(options.prompts))
    limits.check_points(max(options.points), "--points: ")
    if options.images < 1 or (options.images > 1 and not layout.multi_image):
        raise BadInputError("--images N > 1 needs a multi-image graph (segdeploy export --multi-image)" if options.images > 1 else "--images must be at least 1")
    check_call_memory(options, layout, metadata.get("attention"))
    form = f"attention={metadata.get('attention', 'plain')}, upscale={metadata.get('upscale', 'convtranspose')}, precision={precision}"
    if layout.multi_image:
        form += f", multi-image ({options.images} per call)"
    report = BenchReport(
        graph=str(options.onnx), form=form, machine=machine_info(options.threads),
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
    )
    _limit_torch_threads(options.threads)
    with tempfile.TemporaryDirectory(prefix="segdeploy-bench-") as scratch:
        runners = open_runners(options, layout, metadata, Path(scratch))
        if quiet_onnxruntime_threads(runners):
            report.notes.append("onnxruntime's idle threads do not spin in this run: spinning took the cores from the torch-based backend beside it")
        _measure(options, runners, layout, report, tick)
    if not options.floor:
        report.notes.append("floor not measured (--no-floor)")
    elif not layout.postprocess:
        report.notes.append("floor not measured: the graph returns no full-size masks to set the mask-output pass (export it with postprocessing)")
    else:
        _measure_floors(options, layout, report)
    write_results(report, options.out_dir, options.name)
    return report


def check_call_memory(options: BenchOptions, layout: contract.GraphLayout, attention: str | None) -> None:
    """BadInputError when the largest cell's one call would need more than ``max_call_bytes``
    (runtime.memory's measured per-prompt costs): a sweep that would exhaust memory stops before it starts."""
    from segdeploy.runtime.memory import MiB, estimate_call_bytes

    prompts, points = max(options.prompts), max(options.points)
    need = estimate_call_bytes(prompts=prompts, points=points, orig_size=tuple(options.orig_size) if layout.postprocess else None,
                               masks=layout.mask_output.count, images=min(options.images, prompts), multi_image=layout.multi_image, attention=attention)
    if need > options.max_call_bytes:
        raise BadInputError(
            f"--prompts {prompts} x --points {points} at --orig-size {options.orig_size[0]}x{options.orig_size[1]} needs about "
            f"{need / MiB:,.0f} MiB in one call, above --max-call-bytes {options.max_call_bytes / MiB:,.0f} MiB; bench fewer prompts per call or raise it"
        )


def _measure(options: BenchOptions, runners: dict[str, Runner], layout: contract.GraphLayout, report: BenchReport, tick: Progress) -> None:
    """Interleaved rounds over every (prompts, points) cell; appends rows to ``report``."""
    rng = np.random.default_rng(options.seed)
    cells = [(b, n) for n in options.points for b in options.prompts]
    images = options.images if layout.multi_image else None
    for runner in runners.values():
        runner.activate()
    try:
        if options.warmup:  # burn-in: allocator arenas, caches and clocks settle before the first cell
            feeds = bench_feeds(options.prompts[0], options.points[0], options.orig_size, rng, layout.postprocess, images, family=layout.family)
            for runner in runners.values():
                deadline = time.perf_counter() + BURN_IN_SECONDS
                while time.perf_counter() < deadline:
                    runner.infer(feeds)
        for index, (prompts, points) in enumerate(cells):
            tick(index, len(cells), f"B={prompts} N={points}")
            feeds = bench_feeds(prompts, points, options.orig_size, rng, layout.postprocess, images, family=layout.family)
            times: dict[str, list[float]] = {label: [] for label in runners}
            for round_index in range(options.warmup + options.runs):
                for label, runner in runners.items():
                    runner.infer(feeds)  # re-warm: caches hold this backend's weights, as in a server running one model
                    started = time.perf_counter()
                    runner.infer(feeds)
                    if round_index >= options.warmup:
                        times[label].append(time.perf_counter() - started)
            rows = {label: _row(label, prompts, points, t) for label, t in times.items()}
            if "official" in rows:
                for row in rows.values():
                    row.ratio_to_baseline = row.per_prompt_ms / rows["official"].per_prompt_ms
            report.rows.extend(rows.values())
    finally:
        for runner in runners.values():
            runner.deactivate()
    tick(len(cells), len(cells), "writing results")


def _measure_floors(options: BenchOptions, layout: contract.GraphLayout, report: BenchReport) -> None:
    """Per cell, the floor measured interleaved with our graph on onnxruntime (segdeploy.floor); every
    row of the cell gets its p50 over the floor, and the report a line per cell with the interleaved
    ratio, which is the one to quote (both sides timed in the same blocks)."""
    from segdeploy.floor import measure_floor

    rng = np.random.default_rng(options.seed)
    images = options.images if layout.multi_image else None
    for points in options.points:
        for prompts in options.prompts:
            feeds = bench_feeds(prompts, points, options.orig_size, rng, layout.postprocess, images, family=layout.family)
            floor = measure_floor(options.onnx, feeds, runs=options.runs, threads=options.threads)
            report.floors.append(floor.to_dict() | {"points": points})
            report.notes.append(f"B={prompts} N={points}: {floor.describe()}")
            for row in report.rows:
                if (row.prompts, row.points) == (prompts, points):
                    row.floor_ms, row.ratio_to_floor = floor.floor_ms, row.p50_ms / floor.floor_ms


def _limit_torch_threads(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def write_results(report: BenchReport, out_dir: Path, name: str) -> None:
    """JSON, CSV and (with matplotlib) a PNG of per-prompt latency against prompts per call."""
    json_path, csv_path, png_path = (out_dir / f"{name}.{ext}" for ext in ("json", "csv", "png"))
    report.files = [str(json_path), str(csv_path)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(report.rows[0]).keys()) if report.rows else ["backend"])
    writer.writeheader()
    for row in report.rows:
        writer.writerow(asdict(row))
    write_atomically(csv_path, buffer.getvalue().encode())
    try:
        write_atomically(png_path, plot_png(report))
        report.files.append(str(png_path))
    except ImportError:
        report.notes.append("plot skipped: matplotlib is not installed (pip install 'segdeploy[bench]')")
    write_atomically(json_path, (json.dumps(report.to_dict(), indent=2) + "\n").encode())


def plot_png(report: BenchReport) -> bytes:
    """The per-prompt latency plot as PNG bytes."""
    figure = plot_figure(report)
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def plot_figure(report: BenchReport) -> Figure:
    """Per-prompt p50 over prompts per call, one line per backend and point count; the y-axis starts
    at zero, so a few percent look like a few percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    series: dict[tuple[str, int], list[BenchRow]] = {}
    for row in report.rows:
        series.setdefault((row.backend, row.points), []).append(row)
    for (backend, points), rows in sorted(series.items()):
        rows.sort(key=lambda r: r.prompts)
        axis.plot([r.prompts for r in rows], [r.per_prompt_ms for r in rows], marker="o", label=f"{backend}, N={points}")
    floors = {(r.prompts, r.points): r.floor_ms / r.prompts for r in report.rows if r.floor_ms is not None}
    for points in sorted({n for _, n in floors}):
        cells = sorted((b, ms) for (b, n), ms in floors.items() if n == points)
        axis.plot([b for b, _ in cells], [ms for _, ms in cells], linestyle="--", color="gray", label=f"floor, N={points}")
    axis.set_xscale("log", base=2)
    axis.set_ylim(bottom=0)
    axis.set_xlabel("prompts per call (B)")
    axis.set_ylabel("ms per prompt (p50)")
    machine = report.machine
    axis.set_title(f"{report.form}\n{machine['cpu']}, {machine['threads']} threads", fontsize=8)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def render_bench(report: BenchReport) -> str:
    lines = [f"bench {report.graph} ({report.form}) on {report.machine['cpu']}, {report.machine['threads']} threads"]
    header = f"{'backend':14} {'B':>4} {'N':>3} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'ms/prompt':>10} {'prompts/s':>10} {'vs official':>11} {'vs floor':>8}"
    lines += [header, "-" * len(header)]
    for r in report.rows:
        ratio = f"{r.ratio_to_baseline:.2f}x" if r.ratio_to_baseline is not None else "-"
        floor = f"{r.ratio_to_floor:.2f}x" if r.ratio_to_floor is not None else "-"
        lines.append(f"{r.backend:14} {r.prompts:4d} {r.points:3d} {r.p50_ms:9.2f} {r.p90_ms:9.2f} {r.p99_ms:9.2f} {r.per_prompt_ms:10.2f} {r.prompts_per_s:10.1f} {ratio:>11} {floor:>8}")
    lines += [f"note: {note}" for note in report.notes]
    lines.append("wrote " + ", ".join(report.files))
    return "\n".join(lines)
