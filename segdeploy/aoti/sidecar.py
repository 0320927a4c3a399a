"""The JSON sidecar beside every .pt2 package, and the checks run before a package is loaded: an
AOTInductor package is native code tied to the torch version, the device and (on the CPU) the
instruction set of the machine that compiled it."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segdeploy.contract import GraphLayout, MaskOutput
from segdeploy.errors import BadInputError

SIDECAR_VERSION = 1


@dataclass
class AotiSidecar:
    segdeploy_version: str
    torch_version: str
    device: str  # "cpu" or "cuda"
    machine: str  # platform.machine(), e.g. x86_64
    cpu_capability: str  # torch's CPU kernel level at build time (AVX512, AVX2, ...): Inductor compiles with -march=native
    gpu_name: str  # "" on the CPU
    compute_capability: str  # "" on the CPU
    precision: str
    tf32: bool
    ranges: dict  # {"prompts": {"min", "opt", "max"}, "points": {...}} (and "images" for the multi-image flavor)
    io: list[dict]
    mask_output: str
    postprocess: bool
    multi_image: bool
    attention: str
    upscale: str
    weights: str  # "checkpoint" or "random"
    weights_sha256: str
    random_seed: str
    variant: str
    onnx_path: str
    onnx_sha256: str
    package_sha256: str
    build_seconds: float
    family: str = ""  # the decoder family's name; empty (absent) in packages built before families: the registry's default
    sidecar_version: int = SIDECAR_VERSION
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @property
    def layout(self) -> GraphLayout:
        from segdeploy.registry import family_from_metadata

        family = family_from_metadata({"family": self.family}, "the package's sidecar")
        return family.layout(MaskOutput(self.mask_output), self.postprocess, self.multi_image)


def sidecar_path(package: Path) -> Path:
    return Path(package).with_suffix(".json")


def read_sidecar(package: Path) -> AotiSidecar:
    """The sidecar of ``package``, or a one-line BadInputError."""
    path = sidecar_path(package)
    if not Path(package).is_file():
        raise BadInputError(f"package not found: {package}")
    if not path.is_file():
        raise BadInputError(f"{package} has no sidecar {path.name}; segdeploy only runs packages it built (with their sidecar)")
    try:
        sidecar = AotiSidecar(**json.loads(path.read_text()))
        from segdeploy.registry import family_from_metadata

        family_from_metadata({"family": sidecar.family}, str(path))  # a family this segdeploy knows
        sidecar.layout  # noqa: B018 - a layout segdeploy knows
        return sidecar
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"{path} is not a segdeploy AOTInductor sidecar ({str(exc).splitlines()[0]})") from None


@dataclass(frozen=True)
class TorchEnvironment:
    torch_version: str
    machine: str
    cpu_capability: str
    gpu_name: str = ""  # of CUDA device 0; "" without one
    compute_capability: str = ""


def torch_environment() -> TorchEnvironment:
    """What a package built here would record (and what one loaded here must match)."""
    import torch

    gpu, capability = "", ""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        gpu, capability = torch.cuda.get_device_name(0), f"{major}.{minor}"
    return TorchEnvironment(torch.__version__, platform.machine(), torch.backends.cpu.get_cpu_capability(), gpu, capability)


def compatibility_problems(sidecar: AotiSidecar, env: TorchEnvironment) -> list[str]:
    """Why this machine cannot load the package; empty when it can."""
    problems = []
    if sidecar.torch_version != env.torch_version:
        problems.append(f"built with torch {sidecar.torch_version}, this machine has torch {env.torch_version} (rebuild it here)")
    if sidecar.machine != env.machine or sidecar.cpu_capability != env.cpu_capability:
        problems.append(f"compiled for {sidecar.machine} {sidecar.cpu_capability}, this machine is {env.machine} {env.cpu_capability}")
    if sidecar.device == "cuda":
        if not env.gpu_name:
            problems.append("built for CUDA, and this machine has no CUDA GPU (or a CPU-only torch)")
        elif sidecar.compute_capability != env.compute_capability:
            problems.append(f"built for compute capability {sidecar.compute_capability} ({sidecar.gpu_name}); this {env.gpu_name} has {env.compute_capability}")
    elif sidecar.device != "cpu":
        problems.append(f"built for device {sidecar.device!r}, which segdeploy does not run")
    return problems


def check_loadable(sidecar: AotiSidecar, env: TorchEnvironment, package: Path) -> None:
    """A one-line BadInputError unless the package was built for this torch and device, and is the
    file its sidecar describes."""
    from segdeploy.weights import file_sha256

    problems = compatibility_problems(sidecar, env)
    if not problems and file_sha256(Path(package)) != sidecar.package_sha256:
        problems.append(f"its sha256 is not the one its sidecar {sidecar_path(package).name} records (rebuilt or replaced since)")
    if problems:
        raise BadInputError(f"refusing {package}: " + "; ".join(problems))


def check_in_ranges(sidecar: AotiSidecar, sizes: dict[str, int]) -> None:
    """A one-line BadInputError when a call's prompts, points or images are outside the compiled ranges."""
    for name, size in sizes.items():
        bounds = sidecar.ranges.get(name)
        if bounds and not bounds["min"] <= size <= bounds["max"]:
            ranges = ", ".join(f"{key} {r['min']}..{r['max']}" for key, r in sidecar.ranges.items())
            raise BadInputError(f"{size} {name} is outside the package's compiled ranges ({ranges}); rebuild with wider --prompts/--points/--images")
