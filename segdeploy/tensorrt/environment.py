"""What TensorRT, CUDA and GPU this machine has, and the one-line error when something is missing."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from segdeploy.errors import BadInputError, MissingDependencyError

INSTALL_HINT = (
    "install the TensorRT extra on a machine with an NVIDIA GPU and driver: "
    "pip install 'segdeploy[tensorrt]' --extra-index-url https://pypi.nvidia.com"
)


@dataclass(frozen=True)
class TrtEnvironment:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"
    cuda_version: str

    @property
    def tensorrt_major(self) -> int:
        return int(self.tensorrt_version.split(".")[0])


def check_trt_version(text: str) -> str:
    """A TensorRT version as MAJOR[.MINOR[.PATCH...]] (e.g. 10.14), or BadInputError."""
    parts = str(text).split(".")
    if not all(part.isascii() and part.isdigit() for part in parts) or not 1 <= int(parts[0]) <= 99:
        raise BadInputError(f"--trt-version takes a TensorRT version such as 10.14, got {text!r}")
    return str(text)


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def require_tensorrt() -> TrtEnvironment:
    """The TensorRT environment here, or MissingDependencyError saying what is missing and how to get it."""
    missing = [name for name in ("tensorrt", "polygraphy") if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(f"{' and '.join(missing)} not installed; {INSTALL_HINT}")
    try:
        import tensorrt as trt
    except Exception as exc:  # the PyPI stub wheels fail at import with various errors
        raise MissingDependencyError(f"tensorrt does not import ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from None
    try:
        import torch

        if not torch.cuda.is_available():
            raise MissingDependencyError(f"TensorRT {trt.__version__} is installed but no CUDA GPU is visible; {INSTALL_HINT}")
        major, minor = torch.cuda.get_device_capability(0)
        return TrtEnvironment(trt.__version__, torch.cuda.get_device_name(0), f"{major}.{minor}", str(torch.version.cuda))
    except ImportError:
        raise MissingDependencyError(f"TensorRT {trt.__version__} needs a CUDA build of torch here to find the GPU") from None
