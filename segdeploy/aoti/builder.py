"""`segdeploy build-engine --runtime aoti`: the decoder of an exported graph (same weights, same form)
exported with torch.export (dynamic prompt and point counts) and compiled by AOTInductor into a
.pt2 package for the CPU or CUDA, written atomically with its JSON sidecar."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segdeploy import contract
from segdeploy.version import __version__
from segdeploy.aoti.sidecar import AotiSidecar, sidecar_path
from segdeploy.errors import BadInputError, MissingDependencyError
from segdeploy.forms import AttentionForm, GraphForm, Precision, UpscaleForm
from segdeploy.graph_io import file_mode, load_graph, read_metadata, write_atomically
from segdeploy.tensorrt.profiles import DEFAULT_IMAGES, DEFAULT_POINTS, DEFAULT_PROMPTS, Range

Progress = Callable[[str], None]
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class AotiOptions:
    """What one package holds: the graph it mirrors, where it goes, device, precision and ranges."""

    onnx: Path
    out: Path
    device: str = "cpu"
    precision: Precision = Precision.FP32
    prompts: Range = DEFAULT_PROMPTS
    points: Range = DEFAULT_POINTS
    images: Range = DEFAULT_IMAGES  # multi-image flavor only
    checkpoint: Path | None = None
    tf32: bool = True  # CUDA fp32 only: TF32 matrix work

    def ranges(self, layout: contract.GraphLayout) -> dict[str, Range]:
        """The dynamic dims' ranges, by contract dim name."""
        ranges = {contract.DimName.PROMPTS.value: self.prompts, contract.DimName.POINTS.value: self.points}
        if layout.multi_image:
            ranges[contract.DimName.IMAGES.value] = self.images
        return ranges


@dataclass
class AotiReport:
    package: Path
    sidecar: Path
    seconds: float
    info: AotiSidecar


def plan_package(
    onnx: Path, out: Path | None, device: str = "cpu", requested: Precision | None = None, *,
    prompts: Range = DEFAULT_PROMPTS, points: Range = DEFAULT_POINTS, images: Range = DEFAULT_IMAGES,
    checkpoint: Path | None = None, tf32: bool = True,
) -> AotiOptions:
    """AotiOptions for a graph, with device and precision checked and the output path defaulted."""
    from segdeploy.provenance import graph_layout

    if device not in DEVICES:
        raise BadInputError(f"--device takes {' or '.join(DEVICES)}, got {device!r}")
    metadata = read_metadata(load_graph(onnx))
    layout, graph_precision = graph_layout(metadata, Path(onnx))
    if layout.official:
        raise BadInputError(f"{onnx} has segment-anything's official signature; AOTInductor packages are built from graphs with segdeploy's signature (export without --signature official)")
    precision = requested or Precision(graph_precision)
    if device == "cpu" and precision is not Precision.FP32:
        raise BadInputError(f"{precision.value} packages are for --device cuda; on the CPU build at --fp32 (the CPU has no fast {precision.value} matrix work)")
    suffix = "" if precision.value == graph_precision else f"_{precision.value}"
    path = Path(out or Path("engines") / f"{Path(onnx).stem}_aoti_{device}{suffix}.pt2")
    if path.suffix != ".pt2":
        raise BadInputError(f"an AOTInductor package is a .pt2 file; got --out {path}")
    return AotiOptions(Path(onnx), path, device, precision, prompts, points, images, checkpoint, tf32)


def require_toolchain(device: str) -> None:
    """MissingDependencyError (one line) when AOTInductor cannot compile for ``device`` here."""
    import torch
    from torch._inductor import exc as inductor_exc
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except inductor_exc.InvalidCxxCompiler:
        raise MissingDependencyError("AOTInductor needs a C++ compiler and none was found (looked for $CXX, else g++); install one, e.g. apt-get install g++") from None
    if device == "cuda":
        if not torch.cuda.is_available():
            raise MissingDependencyError(f"--device cuda needs an NVIDIA GPU and a CUDA build of torch; this is torch {torch.__version__} (CUDA {torch.version.cuda}, GPU visible: no)")
        try:
            import triton  # noqa: F401  (Inductor writes CUDA kernels in Triton)
        except ImportError:
            raise MissingDependencyError("--device cuda needs triton (it ships with CUDA builds of torch): pip install triton") from None


def _trace_size(r: Range) -> int:
    """A size to trace a dim at: torch.export specializes dynamic dims seen at 0 or 1."""
    return r.max if r.max == r.min else max(r.opt, min(2, r.max))


def example_inputs(options: AotiOptions, layout: contract.GraphLayout) -> tuple:
    """Inputs to trace with, shaped by the family's contract at trace sizes, on the package's device
    (orig_im_size, a size, stays on the host). Values do not matter except the sizes and indices."""
    import torch

    b, n, i = (_trace_size(r) for r in (options.prompts, options.points, options.images))
    sizes = {contract.DimName.PROMPTS.value: b, contract.DimName.POINTS.value: n, contract.DimName.IMAGES.value: i}
    feeds = []
    for spec in layout.inputs():
        shape = tuple(sizes[dim] if isinstance(dim, str) else dim for dim in spec.dims)
        if spec.name == contract.ORIG_IM_SIZE.name:
            feeds.append(torch.tensor([contract.MODEL_INPUT_SIZE, contract.MODEL_INPUT_SIZE], dtype=torch.int64))
            continue
        if spec.name == contract.IMAGE_INDEX.name:
            tensor = torch.arange(b, dtype=torch.int64) % i
        elif spec.name == contract.POINT_LABELS.name:
            tensor = torch.ones(shape)
        else:
            tensor = torch.zeros(shape)
        feeds.append(tensor.to(options.device))
    return tuple(feeds)


def dynamic_shapes(options: AotiOptions, layout: contract.GraphLayout) -> tuple:
    """torch.export's dynamic_shapes from the contract's symbolic dims and the ranges (a range of
    one value stays static)."""
    from torch.export import Dim

    dims = {name: Dim(name, min=r.min, max=r.max) for name, r in options.ranges(layout).items() if r.max > r.min}
    return tuple(
        {axis: dims[dim] for axis, dim in enumerate(spec.dims) if isinstance(dim, str) and dim in dims}
        for spec in layout.inputs()
    )


def package_metadata(options: AotiOptions, layout: contract.GraphLayout) -> dict[str, str]:
    """Stored in the package itself, for C++ callers (AOTIModelPackageLoader::get_metadata)."""
    return {
        "segdeploy.inputs": ",".join(s.name for s in layout.inputs()),
        "segdeploy.outputs": ",".join(layout.output_names()),
        "segdeploy.device": options.device,
        "segdeploy.precision": options.precision.value,
        "segdeploy.host_inputs": contract.ORIG_IM_SIZE.name if layout.postprocess else "",
        "segdeploy.family": layout.family.name,
    }


@contextmanager
def _tf32(enabled: bool):
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def export_program(options: AotiOptions, progress: Progress | None = None):
    """(torch.export program, layout, form, graph metadata) of the decoder a package will hold."""
    import torch

    from segdeploy.provenance import graph_layout, resolve_weights

    say = progress or (lambda _msg: None)
    metadata = read_metadata(load_graph(options.onnx))
    layout, _ = graph_layout(metadata, options.onnx)
    say("loading weights")
    decoder, _ = resolve_weights(metadata, options.checkpoint, options.onnx)
    form = GraphForm(AttentionForm(metadata.get("attention", "plain")), UpscaleForm(metadata.get("upscale", "convtranspose")), options.precision)
    module = layout.family.compiled_graph(decoder, layout, form).eval().to(options.device)
    say("exporting with torch.export")
    with torch.no_grad():
        program = torch.export.export(module, example_inputs(options, layout), dynamic_shapes=dynamic_shapes(options, layout), strict=False)
    return program, layout, form, metadata


def build_package(options: AotiOptions, progress: Progress | None = None) -> AotiReport:
    """Export, compile and write the package and its sidecar. Needs a C++ compiler (and CUDA for cuda)."""
    say = progress or (lambda _msg: None)
    require_toolchain(options.device)
    import torch

    started = time.perf_counter()
    program, layout, form, metadata = export_program(options, say)
    tf32 = options.tf32 and options.device == "cuda" and options.precision is Precision.FP32
    say("compiling with AOTInductor (about a minute on 2 cores)")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{options.out.name}.", dir=options.out.parent))
    try:
        with _tf32(tf32), torch.no_grad():
            built = torch._inductor.aoti_compile_and_package(
                program, package_path=str(scratch / "package.pt2"),
                inductor_configs={"aot_inductor.metadata": package_metadata(options, layout)},
            )
        say(f"writing {options.out}")
        os.chmod(built, file_mode())  # as the umask gives, like every file segdeploy writes
        os.replace(built, options.out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info = describe_package(options, layout, form, metadata, tf32, time.perf_counter() - started)
    write_atomically(sidecar_path(options.out), info.to_json().encode())
    return AotiReport(options.out, sidecar_path(options.out), time.perf_counter() - started, info)


def describe_package(
    options: AotiOptions, layout: contract.GraphLayout, form: GraphForm, metadata: dict[str, str], tf32: bool, seconds: float,
) -> AotiSidecar:
    """The sidecar of a package just written."""
    from segdeploy.aoti.sidecar import torch_environment
    from segdeploy.weights import file_sha256

    env = torch_environment()
    cuda = options.device == "cuda"
    return AotiSidecar(
        segdeploy_version=__version__,
        torch_version=env.torch_version,
        device=options.device,
        machine=env.machine,
        cpu_capability=env.cpu_capability,
        gpu_name=env.gpu_name if cuda else "",
        compute_capability=env.compute_capability if cuda else "",
        precision=options.precision.value,
        tf32=tf32,
        ranges={name.removeprefix("num_"): vars(r) for name, r in options.ranges(layout).items()},
        io=[{"name": s.name, "dtype": s.dtype, "shape": list(s.dims)} for s in layout.inputs() + layout.outputs()],
        mask_output=layout.mask_output.value,
        postprocess=layout.postprocess,
        multi_image=layout.multi_image,
        attention=form.attention.value,
        upscale=form.upscale.value,
        weights=metadata.get("weights", ""),
        weights_sha256=metadata.get("weights_sha256", ""),
        random_seed=metadata.get("random_seed", ""),
        variant=metadata.get("variant", ""),
        onnx_path=str(options.onnx),
        onnx_sha256=file_sha256(options.onnx),
        package_sha256=file_sha256(options.out),
        build_seconds=round(seconds, 1),
        family=layout.family.name,
    )
