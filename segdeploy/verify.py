"""``segdeploy verify``: run the eager model and an exported graph on the case matrix, with fresh
random draws, and compare every output against the contract's tolerances."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from segdeploy import contract
from segdeploy.cases import Case, single_prompt
from segdeploy.compare import (
    OutputMetrics,
    compare_output,
    compare_outputs,
    contract_problems,
)
from segdeploy.errors import BadInputError
from segdeploy.limits import check_seed
from segdeploy.graph_io import load_graph, read_metadata, value_specs
from segdeploy.provenance import foreign_graph, graph_layout, resolve_weights
from segdeploy.runners.base import Runner

Progress = Callable[[int, int, str], None]


@dataclass
class CaseResult:
    name: str
    prompts: int
    points: int
    orig_size: tuple[int, int]
    mask_input: str
    outputs: list[OutputMetrics]
    ragged: OutputMetrics | None = None  # batched vs each prompt alone, on the candidate
    images: int = 1  # images in the call (multi-image flavor)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs) and (self.ragged is None or self.ragged.passed)


@dataclass
class VerifyReport:
    graph: str
    reference: str
    candidate: str
    precision: str
    weights: str
    seed: int
    tolerance: dict
    contract_problems: list[str] = field(default_factory=list)
    cases: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)  # matrix rows outside an engine's compiled ranges, and why

    @property
    def passed(self) -> bool:
        return not self.contract_problems and bool(self.cases) and all(c.passed for c in self.cases)

    def worst(self, output: str, attr: str) -> float | None:
        values = [getattr(o, attr) for c in self.cases for o in c.outputs if o.name == output and getattr(o, attr) is not None]
        if not values:
            return None
        return min(values) if attr.startswith("mask_iou") else max(values)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        for case, result in zip(data["cases"], self.cases):
            case["passed"] = result.passed
        return data


@dataclass(frozen=True)
class VerifyOptions:
    onnx: Path
    checkpoint: Path | None = None
    cases: int | None = None
    seed: int | None = None
    threads: int | None = None
    engine: Path | None = None  # a TensorRT plan or AOTInductor .pt2 package built from ``onnx``: verified instead of onnxruntime
    backend: str = "onnxruntime"  # what runs the graph itself: onnxruntime, or onnx-reference (ONNX's numpy evaluator: slow; bf16 too)
    max_side: int | None = None  # shrink each row's original image size to at most this side (aspect kept): every row, less resizing


GRAPH_BACKENDS = ("onnxruntime", "onnx-reference")  # what `verify --backend` runs a graph on


def engine_backend(engine: Path) -> str:
    """The backend that runs an engine file: aoti for a .pt2 package, tensorrt for a plan."""
    return "aoti" if Path(engine).suffix == ".pt2" else "tensorrt"


def read_engine_sidecar(engine: Path):
    """The sidecar of a TensorRT plan or an AOTInductor package (both name their ONNX source)."""
    if engine_backend(engine) == "aoti":
        from segdeploy.aoti.sidecar import read_sidecar
    else:
        from segdeploy.tensorrt.sidecar import read_sidecar
    return read_sidecar(engine)


def engine_refusal(engine: Path) -> Callable[[dict[str, np.ndarray]], str]:
    """For an engine, why it would refuse one call's feeds (outside its compiled ranges or
    profiles); empty when it takes them."""
    sidecar = read_engine_sidecar(engine)

    def why_not(feeds: dict[str, np.ndarray]) -> str:
        prompts, points = (int(d) for d in feeds[contract.POINT_COORDS.name].shape[:2])
        images = int(feeds[contract.IMAGE_EMBEDDINGS.name].shape[0]) if contract.IMAGE_INDEX.name in feeds else None
        try:
            if engine_backend(engine) == "aoti":
                from segdeploy.aoti.sidecar import check_in_ranges

                check_in_ranges(sidecar, {"prompts": prompts, "points": points, **({} if images is None else {"images": images})})
            else:
                from segdeploy.tensorrt.sidecar import check_in_profile

                size = feeds.get(contract.ORIG_IM_SIZE.name)
                check_in_profile(sidecar, prompts, points, None if size is None else (int(size[0]), int(size[1])), images)
        except BadInputError as error:
            return str(error)
        return ""

    return why_not


def cap_size(case: Case, max_side: int) -> Case:
    """The case with its original image size shrunk to at most ``max_side`` (aspect kept, sides at
    least 1). Prompts stay as drawn: their model-input frame follows the aspect ratio, not the size."""
    height, width = case.spec.orig_size
    scale = max_side / max(height, width)
    if scale >= 1:
        return case
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    feeds = dict(case.feeds)
    if contract.ORIG_IM_SIZE.name in feeds:
        feeds[contract.ORIG_IM_SIZE.name] = np.array(size, np.int64)
    spec = replace(case.spec, name=f"{case.spec.name} (at {size[0]}x{size[1]})", orig_size=size)
    return replace(case, spec=spec, feeds=feeds)


def check_engine_source(engine: Path, onnx: Path) -> None:
    """Refuse an engine whose sidecar names another ONNX file than the one verify reads."""
    from segdeploy.weights import file_sha256

    sidecar = read_engine_sidecar(engine)
    if sidecar.onnx_sha256 != file_sha256(Path(onnx)):
        raise BadInputError(f"{engine} was built from {sidecar.onnx_path} (sha256 {sidecar.onnx_sha256[:12]}…), not from {onnx}")


def engine_precision(engine: Path) -> str:
    """The tolerance class of an engine: its build precision, or tf32 for fp32 built with TF32 on."""
    sidecar = read_engine_sidecar(engine)
    tf32 = sidecar.tf32 if engine_backend(engine) == "aoti" else sidecar.build_flags.get("tf32", False)
    if sidecar.precision == "fp32" and tf32:
        return "tf32"
    return sidecar.precision


def check_case(reference: Runner, candidate: Runner, case: Case, tolerance: contract.Tolerance) -> CaseResult:
    """Compare reference and candidate on one case, plus batched-vs-alone on the candidate when ragged."""
    expected = reference.infer(case.feeds)
    got = candidate.infer(case.feeds)
    result = CaseResult(
        name=case.spec.name,
        prompts=case.spec.prompts,
        points=case.num_points,
        orig_size=case.spec.orig_size,
        mask_input=case.spec.mask_input,
        outputs=compare_outputs(expected, got, tolerance),
        images=case.num_images,
    )
    if case.is_ragged or case.num_images > 1:
        name = "low_res_masks"
        alone = np.concatenate([candidate.infer(single_prompt(case, b))[name] for b in range(case.spec.prompts)])
        metrics = compare_output(name, alone, got[name], tolerance)
        metrics.name = "batch vs each prompt alone on its own image (low_res_masks)"
        result.ragged = metrics
    return result


def verify_graph(
    options: VerifyOptions, progress: Progress | None = None, candidate: Runner | None = None, reference: Runner | None = None,
) -> VerifyReport:
    """Verify an exported graph (or ``candidate``, a runner of it on another backend) against eager:
    the decoder rebuilt from the graph's weights, or ``reference``, a runner of it the caller already
    has (graphs of one export's weights and layout in other forms can share one, and its outputs)."""
    from segdeploy.runners.factory import make_runner
    from segdeploy.runners.torch_runner import TorchRunner

    started = time.perf_counter()
    tick = progress or (lambda *_: None)
    if options.cases is not None and options.cases < 1:
        raise BadInputError("--cases must be at least 1")
    if options.backend not in GRAPH_BACKENDS:
        raise BadInputError(f"--backend takes {' or '.join(GRAPH_BACKENDS)}, got {options.backend!r}")
    if options.engine is not None and options.backend != "onnxruntime":
        raise BadInputError("--engine verifies the engine; --backend chooses what runs the graph itself: give one of them")
    model = load_graph(options.onnx)
    metadata = read_metadata(model)
    if metadata:
        layout, precision = graph_layout(metadata, options.onnx)
        decoder, weights = resolve_weights(metadata, options.checkpoint, options.onnx)
    else:  # another tool's export: its signature from its I/O, its weights from --checkpoint
        precision = "fp32"
        layout, decoder, weights = foreign_graph(model, options.onnx, options.checkpoint)
    if options.engine is not None:
        precision = engine_precision(options.engine)
    tolerance = contract.TOLERANCES[precision]
    seed = check_seed(options.seed, "--seed") if options.seed is not None else secrets.randbits(31)

    if reference is None:
        reference = TorchRunner(decoder, layout)
        if layout.official:
            from segdeploy.runners.prompt_by_prompt import PromptByPromptRunner

            reference = PromptByPromptRunner(reference, layout)
    if candidate is None and options.engine is not None:
        check_engine_source(options.engine, options.onnx)
        candidate = make_runner(engine_backend(options.engine), options.onnx, metadata, layout, engine=options.engine)
    if candidate is None:
        candidate = make_runner(options.backend, options.onnx, metadata, layout, threads=options.threads)
    report = VerifyReport(
        graph=str(options.onnx),
        reference=reference.name,
        candidate=candidate.name,
        precision=precision,
        weights=weights.description,
        seed=seed,
        tolerance=asdict(tolerance),
        contract_problems=contract_problems(value_specs(model.graph.input), value_specs(model.graph.output), layout, output_dims=bool(metadata)),
    )
    del model
    if report.contract_problems:  # running would only fail on names; report the drift itself
        report.seconds = time.perf_counter() - started
        return report
    cases = layout.family.draw_cases(np.random.default_rng(seed), options.cases, layout)
    if options.max_side is not None:
        cases = [cap_size(case, options.max_side) for case in cases]
    if options.engine is not None:  # an engine takes what it was built for: the other rows are listed, not run
        why_not = engine_refusal(options.engine)
        refusals = [why_not(case.feeds) for case in cases]
        report.skipped = [f"{case.spec.name}: {why}" for case, why in zip(cases, refusals) if why]
        cases = [case for case, why in zip(cases, refusals) if not why]
        if not cases:
            raise BadInputError(f"no case fits the engine's compiled ranges ({report.skipped[0]})")
    with reference, candidate:
        for index, case in enumerate(cases):
            tick(index, len(cases), case.spec.name)
            report.cases.append(check_case(reference, candidate, case, tolerance))
    tick(len(cases), len(cases), "done")
    report.seconds = time.perf_counter() - started
    return report


def render_report(report: VerifyReport) -> str:
    """The terminal table of a verify report."""
    lines = [
        f"verify {report.graph}: {report.candidate} vs {report.reference} ({report.precision}), {report.weights}, case draw seed {report.seed}",
    ]
    lines += [f"  CONTRACT: {problem}" for problem in report.contract_problems]
    header = f"{'case':34} {'B':>3} {'N':>3} {'size':>10} {'output':16} {'max abs':>9} {'mean abs':>9} {'rel':>9} {'IoU worst':>9} {'IoU mean':>9}  ok"
    lines += [header, "-" * len(header)]
    for case in report.cases:
        rows = case.outputs + ([case.ragged] if case.ragged else [])
        for i, o in enumerate(rows):
            label = case.name if i == 0 else ""
            where = f"{case.images} images" if case.images > 1 else f"{case.orig_size[0]}x{case.orig_size[1]}"
            b, n, size = (str(case.prompts), str(case.points), where) if i == 0 else ("", "", "")
            name = "batch vs alone" if o is case.ragged else o.name
            iou_w = f"{o.mask_iou_worst:.5f}" if o.mask_iou_worst is not None else "-"
            iou_m = f"{o.mask_iou_mean:.5f}" if o.mask_iou_mean is not None else "-"
            ok = "ok" if o.passed else f"FAIL: {o.failure}"
            lines.append(f"{label[:34]:34} {b:>3} {n:>3} {size:>10} {name:16} {o.max_abs:9.2e} {o.mean_abs:9.2e} {o.rel:9.2e} {iou_w:>9} {iou_m:>9}  {ok}")
    lines += [f"skipped {why}" for why in report.skipped]
    verdict = "PASS" if report.passed else "FAIL"
    failed = sum(not c.passed for c in report.cases)
    skipped = f" ({len(report.skipped)} skipped: outside the engine's compiled ranges)" if report.skipped else ""
    lines.append(f"{verdict}: {len(report.cases) - failed}/{len(report.cases)} cases within tolerance in {report.seconds:.1f}s{skipped}")
    return "\n".join(lines)
