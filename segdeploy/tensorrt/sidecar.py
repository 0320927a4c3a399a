"""The JSON sidecar written beside every engine, and the compatibility check run before an engine
is deserialized (a plan is tied to the TensorRT version and GPU that built it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segdeploy.errors import BadInputError
from segdeploy.tensorrt.environment import TrtEnvironment, parse_version

SIDECAR_VERSION = 1


@dataclass
class Sidecar:
    segdeploy_version: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    cuda_version: str
    precision: str
    typing: str  # "strong" or "weak"
    profiles: list[dict]
    io: list[dict]
    onnx_path: str
    onnx_sha256: str
    onnx_opset: int
    build_flags: dict
    timing_cache: str | None = None
    hardware_compat: str = "none"
    version_compatible: bool = False
    sidecar_version: int = SIDECAR_VERSION
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def sidecar_path(plan: Path) -> Path:
    return Path(plan).with_suffix(".json")


def read_sidecar(plan: Path) -> Sidecar:
    path = sidecar_path(plan)
    if not Path(plan).is_file():
        raise BadInputError(f"engine not found: {plan}")
    if not path.is_file():
        raise BadInputError(f"{plan} has no sidecar {path.name}; segdeploy only runs engines it built (with their sidecar)")
    try:
        data = json.loads(path.read_text())
        return Sidecar(**data)
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"{path} is not a segdeploy sidecar ({exc})") from None


def compatibility_problems(sidecar: Sidecar, env: TrtEnvironment) -> list[str]:
    """Why this machine cannot run the engine; empty when it can."""
    problems = []
    built, here = parse_version(sidecar.tensorrt_version), parse_version(env.tensorrt_version)
    if sidecar.version_compatible:
        if here[:1] != built[:1] or here < built:
            problems.append(f"built version-compatible with TensorRT {sidecar.tensorrt_version}, which runs on the same major version at {sidecar.tensorrt_version} or later; this machine has {env.tensorrt_version}")
    elif built[:3] != here[:3]:
        problems.append(f"built with TensorRT {sidecar.tensorrt_version}, this machine has {env.tensorrt_version} (rebuild, or build with --version-compatible)")
    built_cc, here_cc = parse_version(sidecar.compute_capability), parse_version(env.compute_capability)
    if sidecar.hardware_compat == "ampere+":
        if here_cc < (8, 0):
            problems.append(f"built for Ampere and newer GPUs; this {env.gpu_name} has compute capability {env.compute_capability}")
    elif sidecar.hardware_compat == "same-cc":
        if here_cc != built_cc:
            problems.append(f"built for compute capability {sidecar.compute_capability}; this {env.gpu_name} has {env.compute_capability}")
    elif (sidecar.gpu_name, built_cc) != (env.gpu_name, here_cc):
        problems.append(f"built on {sidecar.gpu_name} (compute capability {sidecar.compute_capability}); this machine has {env.gpu_name} ({env.compute_capability}); rebuild, or build with --hardware-compat")
    return problems


def check_compatible(sidecar: Sidecar, env: TrtEnvironment, plan: Path) -> None:
    problems = compatibility_problems(sidecar, env)
    if problems:
        raise BadInputError(f"refusing {plan}: " + "; ".join(problems))


def check_in_profile(sidecar: Sidecar, prompts: int, points: int, orig_size: tuple[int, int] | None, images: int | None = None) -> None:
    """A one-line error for inputs outside every profile the engine was built with."""
    for profile in sidecar.profiles:
        ok = profile["prompts"]["min"] <= prompts <= profile["prompts"]["max"]
        ok &= profile["points"]["min"] <= points <= profile["points"]["max"]
        if images is not None and "images" in profile:
            ok &= profile["images"]["min"] <= images <= profile["images"]["max"]
        if orig_size is not None:
            low, high = profile["orig_size"]["min"], profile["orig_size"]["max"]
            ok &= all(low[i] <= orig_size[i] <= high[i] for i in (0, 1))
        if ok:
            return
    ranges = "; ".join(
        f"prompts {p['prompts']['min']}..{p['prompts']['max']}, points {p['points']['min']}..{p['points']['max']}, "
        f"orig size {p['orig_size']['min']}..{p['orig_size']['max']}"
        + (f", images {p['images']['min']}..{p['images']['max']}" if images is not None and "images" in p else "")
        for p in sidecar.profiles
    )
    what = f"{prompts} prompts x {points} points" + (f" on {images} images" if images is not None else f" at size {orig_size}")
    raise BadInputError(f"{what} is outside the engine's profile ({ranges}); rebuild with wider --prompts/--points/--orig-size/--images")
