"""Shared fixtures: one exported graph per session, fresh random seeds, hardware markers."""

from __future__ import annotations

import importlib.util
import secrets
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


def _has_tensorrt_and_gpu() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    trt = _has_tensorrt_and_gpu()
    gpu = _has_gpu()
    for item in items:
        if "tensorrt" in item.keywords and not trt:
            item.add_marker(pytest.mark.skip(reason="needs TensorRT and an NVIDIA GPU (run `make test-gpu` on such a machine)"))
        elif "gpu" in item.keywords and not gpu:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU"))


@pytest.fixture
def fresh_seed(request) -> int:
    """A new seed every run, printed on failure so a failing draw can be replayed."""
    seed = secrets.randbits(31)
    request.node.user_properties.append(("seed", seed))
    print(f"seed={seed}")
    return seed


@pytest.fixture
def rng(fresh_seed) -> np.random.Generator:
    return np.random.default_rng(fresh_seed)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """The default export (random weights, seed 0, opset 17, multi, postprocess) and its report."""
    from segdeploy.export import ExportOptions, export_onnx

    path = tmp_path_factory.mktemp("export") / "decoder.onnx"
    return export_onnx(ExportOptions(out=path))


@pytest.fixture(scope="session")
def exported_model(exported):
    import onnx

    return onnx.load(str(exported.path))


@pytest.fixture(scope="session")
def exported_all(tmp_path_factory):
    """A single-image graph with every mask token (--mask-output all): serves both multimask settings."""
    from segdeploy.contract import MaskOutput
    from segdeploy.export import ExportOptions, export_onnx

    path = tmp_path_factory.mktemp("export-all") / "decoder_all.onnx"
    return export_onnx(ExportOptions(out=path, mask_output=MaskOutput.ALL))


@pytest.fixture(scope="session")
def exported_multi(tmp_path_factory):
    """The multi-image flavor (--multi-image --mask-output all), random weights seed 0."""
    from segdeploy.contract import MaskOutput
    from segdeploy.export import ExportOptions, export_onnx

    path = tmp_path_factory.mktemp("export-multi") / "decoder_multi.onnx"
    return export_onnx(ExportOptions(out=path, mask_output=MaskOutput.ALL, multi_image=True))
