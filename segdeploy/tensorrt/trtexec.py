"""The trtexec command equivalent to a `segdeploy build-engine` call; needs no TensorRT."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.contract import GraphLayout
from segdeploy.forms import Precision
from segdeploy.tensorrt.profiles import EngineProfile

HARDWARE_COMPAT = {"none": None, "ampere+": "ampere+", "same-cc": "sameComputeCapability"}


@dataclass(frozen=True)
class BuildOptions:
    """What build-engine builds, shared by the builder, the trtexec printer and the sidecar."""

    onnx: Path
    out: Path
    profile: EngineProfile = EngineProfile()
    precision: Precision = Precision.FP16
    tf32: bool = True
    strongly_typed: bool = False  # from the graph's precision: a typed (fp16/bf16) graph builds strongly typed
    timing_cache: Path | None = None
    opt_level: int = 3
    hardware_compat: str = "none"
    version_compatible: bool = False
    workspace_mib: int | None = None
    layout: GraphLayout = field(kw_only=True)  # the graph's: its family's inputs decide the profile's shapes
    fp32_layers: tuple[str, ...] = ()  # weak typing: layers held in fp32 by precision constraints
    lint_errors: tuple[str, ...] = ()  # built anyway (--allow-lint-errors); recorded in the sidecar


def _shape_spec(shapes: dict, which: int) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims[which])}" for name, dims in shapes.items())


def trtexec_command(options: BuildOptions) -> str:
    """One shell line. Shape-tensor inputs (orig_im_size) take their values in the shape spec."""
    shapes = options.profile.shapes(options.layout)
    args = [
        "trtexec",
        f"--onnx={options.onnx}",
        f"--saveEngine={options.out}",
        f"--minShapes={_shape_spec(shapes, 0)}",
        f"--optShapes={_shape_spec(shapes, 1)}",
        f"--maxShapes={_shape_spec(shapes, 2)}",
    ]
    if options.strongly_typed:
        args.append("--stronglyTyped")
    elif options.precision is not Precision.FP32:
        args.append(f"--{options.precision.value}")
        if options.fp32_layers:
            layers = ",".join(f"{name}:fp32" for name in options.fp32_layers)
            args += ["--precisionConstraints=obey", f"--layerPrecisions={layers}"]
    if not options.tf32:
        args.append("--noTF32")
    if options.timing_cache:
        args.append(f"--timingCacheFile={options.timing_cache}")
    args.append(f"--builderOptimizationLevel={options.opt_level}")
    if HARDWARE_COMPAT[options.hardware_compat]:
        args.append(f"--hardwareCompatibilityLevel={HARDWARE_COMPAT[options.hardware_compat]}")
    if options.version_compatible:
        args.append("--versionCompatible")
    if options.workspace_mib:
        args.append(f"--memPoolSize=workspace:{options.workspace_mib}M")
    args += ["--profilingVerbosity=detailed", "--skipInference"]
    return " ".join(shlex.quote(a) for a in args)
