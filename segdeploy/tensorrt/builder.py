"""`segdeploy build-engine`: an ONNX graph from `segdeploy export` into a TensorRT plan with its
sidecar, through Polygraphy's loaders (NetworkFromOnnxPath, CreateConfig, Profile, EngineFromNetwork).

Precision paths:
- a typed graph (exported with --precision fp16/bf16) builds strongly typed on TensorRT 10 and 11;
- an fp32 graph with --fp16/--bf16 builds weakly typed on TensorRT 10 (builder flag, with
  LayerNorm/softmax/reduce layers held in fp32 by precision constraints); TensorRT 11 has no weak
  typing, so there the graph must be exported typed;
- an fp32 graph at fp32 builds as it is (TF32 on unless --no-tf32).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segdeploy import __version__
from segdeploy.errors import BadInputError
from segdeploy.forms import Precision
from segdeploy.graph_io import (
    graph_opset,
    load_graph,
    read_metadata,
    value_specs,
    write_atomically,
)
from segdeploy.tensorrt.sidecar import Sidecar, sidecar_path
from segdeploy.tensorrt.trtexec import BuildOptions, trtexec_command

Progress = Callable[[str], None]
FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum")


def precision_plan(graph_precision: str, requested: Precision | None, trt_major: int) -> tuple[Precision, bool]:
    """(build precision, strongly typed?) for a graph of ``graph_precision`` on TensorRT ``trt_major``."""
    graph = Precision(graph_precision)
    wanted = requested or graph
    if graph is not Precision.FP32:
        if wanted is not graph:
            raise BadInputError(f"the graph is typed {graph.value}; it builds only at {graph.value} (re-export with --precision {wanted.value})")
        return graph, True
    if wanted is Precision.FP32:
        return wanted, trt_major >= 11
    if trt_major >= 11:
        raise BadInputError(
            f"TensorRT {trt_major} builds strongly typed networks only: export the graph with --precision {wanted.value} and build that"
        )
    return wanted, False


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


def plan_options(onnx: Path, out: Path | None, requested: Precision | None, trt_major: int, **kwargs) -> BuildOptions:
    """BuildOptions for a graph, with the precision path decided and the output path defaulted."""
    metadata = read_metadata(load_graph(onnx))
    if not metadata:
        raise BadInputError(f"{onnx} carries no segdeploy metadata; build engines from `segdeploy export` graphs")
    precision, strongly_typed = precision_plan(metadata.get("precision", "fp32"), requested, trt_major)
    plan = out or Path("engines") / f"{Path(onnx).stem}_{precision.value}.plan"
    weak_low = not strongly_typed and precision is not Precision.FP32
    return BuildOptions(
        onnx=Path(onnx), out=Path(plan), precision=precision, strongly_typed=strongly_typed,
        postprocess=metadata.get("postprocess") == "1", fp32_layers=tuple(fp32_layers(onnx)) if weak_low else (),
        **kwargs,
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
    for name, (low, opt, high) in options.profile.shapes(options.postprocess).items():
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
    )
    write_atomically(sidecar_path(options.out), info.to_json().encode())
    return BuildReport(options.out, sidecar_path(options.out), time.perf_counter() - started, info, trtexec_command(options))

