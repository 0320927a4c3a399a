"""`segdeploy build-engine`: an ONNX graph from `segdeploy export` into a TensorRT plan with its
sidecar, through Polygraphy's loaders (NetworkFromOnnxPath, CreateConfig, Profile, EngineFromNetwork).

Before anything is built (or a trtexec line printed), `plan_options` decides:
- the lint runs first; a graph with lint errors (e.g. the onnxruntime form, whose few-token attention
  TensorRT does not fuse) is refused with the exact export command of the TensorRT form, unless
  ``allow_lint_errors``;
- a typed graph (exported with --precision fp16/bf16) builds strongly typed on TensorRT 10 and 11;
- an fp32 graph with --fp16/--bf16 is refused with the exact export command of the typed graph;
  weakly typed builds (builder flag, LayerNorm/softmax/reduce layers held in fp32 by precision
  constraints) only with ``weak_typing`` on TensorRT 10 (TensorRT 11 has no weak typing);
- an fp32 graph at fp32 builds as it is (TF32 on unless --no-tf32).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segdeploy.version import __version__
from segdeploy.errors import BadInputError
from segdeploy.forms import Precision
from segdeploy.graph_io import (
    graph_opset,
    load_graph,
    read_metadata,
    value_specs,
    write_atomically,
)
from segdeploy.provenance import graph_layout
from segdeploy.registry import default_variant
from segdeploy.tensorrt.environment import check_trt_version
from segdeploy.tensorrt.sidecar import Sidecar, sidecar_path
from segdeploy.tensorrt.trtexec import BuildOptions, trtexec_command

Progress = Callable[[str], None]
FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum")


@dataclass(frozen=True)
class PrecisionPlan:
    """How a graph builds: at ``precision``, strongly typed or not; or, when ``reexport`` is set, not
    at all until the graph is exported typed at that precision (``reason`` says why)."""

    precision: Precision
    strongly_typed: bool
    reexport: Precision | None = None
    reason: str = ""


def precision_plan(graph_precision: str, requested: Precision | None, trt_major: int, weak_typing: bool = False) -> PrecisionPlan:
    """The precision path of a graph typed ``graph_precision`` built at ``requested`` on TensorRT ``trt_major``."""
    graph = Precision(graph_precision)
    wanted = requested or graph
    if graph is not Precision.FP32:
        if wanted is not graph:
            return PrecisionPlan(wanted, True, wanted, f"the graph is typed {graph.value}; it builds only at {graph.value}")
        return PrecisionPlan(graph, True)
    if wanted is Precision.FP32:
        return PrecisionPlan(wanted, trt_major >= 11)
    if trt_major >= 11:
        return PrecisionPlan(wanted, True, wanted, f"TensorRT {trt_major} builds strongly typed networks only, and the graph is fp32")
    if not weak_typing:
        return PrecisionPlan(wanted, True, wanted, f"the graph is fp32, so --{wanted.value} would build it weakly typed (deprecated; --weak-typing asks for it)")
    return PrecisionPlan(wanted, False)


# The official signature takes orig_im_size as float32, which TensorRT cannot use as a shape input,
# and its `best` mask has no equivalent in this contract: its TensorRT form is segdeploy's signature.
OFFICIAL_FOR_TENSORRT = (
    "segdeploy's signature: TensorRT takes orig_im_size as an int64 shape input, not the official float32 one; "
    "--mask-output all gives the four masks return_single_mask picks from"
)


def export_command(metadata: dict[str, str], precision: Precision) -> tuple[str, Path]:
    """The `segdeploy export` line that writes this graph's TensorRT form at ``precision`` (same
    variant, weights, mask output and postprocessing), and the path it writes."""
    from segdeploy.contract import MaskOutput, Signature
    from segdeploy.export import MAX_TRACE_OPSET, ExportOptions
    from segdeploy.forms import Target

    opset = int(metadata.get("opset") or 17)
    opset = opset if opset <= MAX_TRACE_OPSET else 17
    mask_output = MaskOutput(metadata.get("mask_output") or "multi")
    if metadata.get("signature") == Signature.OFFICIAL.value:  # see OFFICIAL_FOR_TENSORRT
        mask_output = MaskOutput.ALL
    options = ExportOptions(
        variant=metadata.get("variant") or default_variant(), opset=opset, mask_output=mask_output,
        postprocess=metadata.get("postprocess") != "0", target=Target.TENSORRT, precision=precision,
        multi_image=metadata.get("images") == "multi",
    )
    args = ["segdeploy", "export", "--target", "tensorrt"]
    args += ["--precision", precision.value] if precision is not Precision.FP32 else []
    args += ["--opset", str(opset)]
    args += ["--variant", options.variant] if options.variant != default_variant() else []
    args += ["--mask-output", options.mask_output.value] if options.mask_output is not MaskOutput.MULTI else []
    args += ["--multi-image"] if options.multi_image else [] if options.postprocess else ["--no-postprocess"]
    if metadata.get("weights") == "checkpoint":
        args += ["--checkpoint", f"<the checkpoint with sha256 {metadata.get('weights_sha256', '')[:12]}…>"]
    elif metadata.get("random_seed") not in ("", "0", None):
        args += ["--seed", metadata["random_seed"]]
    return " ".join(args), options.default_path()


def reexport_error(onnx: Path, metadata: dict[str, str], precision: Precision, requested: Precision | None, reason: str) -> BadInputError:
    """One line: why the graph does not build, and the exact commands that give one that does."""
    command, path = export_command(metadata, precision)
    flag = f" --{requested.value}" if requested is not None and requested is not Precision.FP32 else ""
    note = f" ({OFFICIAL_FOR_TENSORRT})" if metadata.get("signature") == "official" else ""
    return BadInputError(f"{onnx}: {reason}; run `{command}`{note} and then `segdeploy build-engine --onnx {path}{flag}`")


def lint_errors(onnx: Path, trt_version: str) -> list[str]:
    """`segdeploy lint` findings of severity error, as 'rule node' strings."""
    from segdeploy.tensorrt.lint import lint_graph

    return [f"{f.rule} {f.node}" for f in lint_graph(onnx, trt_version).errors]


def fp32_layers(onnx_path: Path) -> list[str]:
    """ONNX node names that the weak-typing path pins to fp32 (TensorRT names layers after nodes)."""
    return [n.name for n in load_graph(onnx_path).graph.node if n.op_type in FP32_OPS]


@dataclass
class BuildReport:
    plan: Path
    sidecar: Path
    seconds: float
    info: Sidecar
    trtexec: str


def plan_options(
    onnx: Path, out: Path | None, requested: Precision | None, trt_version: str, *,
    weak_typing: bool = False, allow_lint_errors: bool = False, **kwargs,
) -> BuildOptions:
    """BuildOptions for a graph, with the lint run, the precision path decided and the output path
    defaulted; BadInputError (with the export command that fixes it) when the graph should not build."""
    metadata = read_metadata(load_graph(onnx))
    if not metadata:
        raise BadInputError(f"{onnx} carries no segdeploy metadata; build engines from `segdeploy export` graphs")
    trt_major = int(check_trt_version(trt_version).split(".")[0])
    plan = precision_plan(metadata.get("precision", "fp32"), requested, trt_major, weak_typing)
    errors = lint_errors(onnx, str(trt_version))
    not_trt_form = bool(errors) and metadata.get("target") != "tensorrt"
    if plan.reexport or (not_trt_form and not allow_lint_errors):
        reasons = [plan.reason] if plan.reexport else []
        if not_trt_form:
            reasons.append(f"it is the {metadata.get('target')} form ({metadata.get('attention')} attention), with {len(errors)} TensorRT lint error(s) ({errors[0]})")
        precision = plan.reexport or plan.precision
        raise reexport_error(onnx, metadata, precision, requested, "; ".join(reasons))
    if errors and not allow_lint_errors:
        raise BadInputError(
            f"{onnx} has {len(errors)} TensorRT lint error(s) (first: {errors[0]}); see `segdeploy lint {onnx}`, or pass --allow-lint-errors to build anyway"
        )
    path = out or Path("engines") / f"{Path(onnx).stem}_{plan.precision.value}.plan"
    weak_low = not plan.strongly_typed and plan.precision is not Precision.FP32
    return BuildOptions(
        onnx=Path(onnx), out=Path(path), precision=plan.precision, strongly_typed=plan.strongly_typed,
        layout=graph_layout(metadata, Path(onnx))[0], fp32_layers=tuple(fp32_layers(onnx)) if weak_low else (),
        lint_errors=tuple(errors), **kwargs,
    )


def build_engine(options: BuildOptions, progress: Progress | None = None) -> BuildReport:
    """Build the plan and write it and its sidecar atomically. Needs TensorRT, Polygraphy and a GPU."""
    from segdeploy.tensorrt.environment import require_tensorrt
    from segdeploy.weights import file_sha256

    say = progress or (lambda _msg: None)
    env = require_tensorrt()
    import tensorrt as trt
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineFromNetwork,
        NetworkFromOnnxPath,
        Profile,
    )

    started = time.perf_counter()
    say("parsing the ONNX graph")
    builder, network, parser = NetworkFromOnnxPath(str(options.onnx), strongly_typed=options.strongly_typed)()
    weak_low = not options.strongly_typed and options.precision is not Precision.FP32
    if weak_low:
        pinned = set(options.fp32_layers)
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if layer.name in pinned or layer.type in (trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX):
                layer.precision = trt.float32
                for output in range(layer.num_outputs):
                    layer.set_output_type(output, trt.float32)
    profile = Profile()
    for name, (low, opt, high) in options.profile.shapes(options.layout).items():
        profile.add(name, min=low, opt=opt, max=high)
    levels = {"none": None, "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
    level = levels[options.hardware_compat]
    cache = str(options.timing_cache) if options.timing_cache else None
    config = CreateConfig(
        tf32=options.tf32,
        fp16=weak_low and options.precision is Precision.FP16,
        bf16=weak_low and options.precision is Precision.BF16,
        profiles=[profile],
        precision_constraints="obey" if weak_low else None,
        load_timing_cache=cache if cache and Path(cache).is_file() else None,
        builder_optimization_level=options.opt_level,
        hardware_compatibility_level=getattr(trt.HardwareCompatibilityLevel, level) if level else None,
        version_compatible=options.version_compatible or None,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: options.workspace_mib << 20} if options.workspace_mib else None,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
    )
    say("building the engine (minutes)")
    engine = EngineFromNetwork((builder, network, parser), config=config, save_timing_cache=cache)()
    say(f"writing {options.out}")
    write_atomically(options.out, bytes(engine.serialize()))
    model = load_graph(options.onnx)
    info = Sidecar(
        segdeploy_version=__version__,
        tensorrt_version=env.tensorrt_version,
        gpu_name=env.gpu_name,
        compute_capability=env.compute_capability,
        cuda_version=env.cuda_version,
        precision=options.precision.value,
        typing="strong" if options.strongly_typed else "weak",
        profiles=[options.profile.to_dict()],
        io=[{"name": s.name, "dtype": s.dtype, "shape": list(s.dims)} for s in value_specs(model.graph.input) + value_specs(model.graph.output)],
        onnx_path=str(options.onnx),
        onnx_sha256=file_sha256(options.onnx),
        onnx_opset=graph_opset(model),
        build_flags={"tf32": options.tf32, "opt_level": options.opt_level, "workspace_mib": options.workspace_mib},
        timing_cache=cache,
        hardware_compat=options.hardware_compat,
        version_compatible=options.version_compatible,
        notes=[f"built despite TensorRT lint error {error}" for error in options.lint_errors],
    )
    write_atomically(sidecar_path(options.out), info.to_json().encode())
    return BuildReport(options.out, sidecar_path(options.out), time.perf_counter() - started, info, trtexec_command(options))

