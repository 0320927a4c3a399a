"""Shared fixtures: one exported graph per session, fresh random seeds, hardware markers."""

from __future__ import annotations

import importlib.util
import secrets
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from background_builds import AOTI_RANGES  # noqa: E402,F401 - the README test compares its builds with these ranges


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


NEEDS_BUILDS = pytest.StashKey[bool]()
READS_BACKGROUND_EXPORTS = ("test_export_identity.py", "test_forms_matrix.py", "test_graph_branches.py")  # the identity manifest's graphs


def pytest_collection_modifyitems(config, items):
    # the tests that use the background builds go last, and before them those reading the graphs the
    # background process exports first (stable order otherwise), so the background work overlaps the rest
    items.sort(key=lambda item: 2 if _uses_background_builds(item) else 1 if item.path.name in READS_BACKGROUND_EXPORTS else 0)
    config.stash[NEEDS_BUILDS] = any(_uses_background_builds(item) for item in items)
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
def export_folder(tmp_path_factory) -> Path:
    """Where the session's shared exports go (tests/shared_exports.py)."""
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="session")
def export_graph(export_folder, background_builds):
    """``export_graph(**ExportOptions fields but out)``: the export's report, made once per session and
    shared by every test asking for the same options (exports are deterministic, byte-identical:
    tests/test_export_identity.py hashes these same files), by this process or, for the identity
    manifest's graphs, often already by the background process. Tests must not change the file."""
    from shared_exports import SharedExports, normalized

    from segdeploy.export import ExportOptions

    exports = SharedExports(export_folder)
    alive = (lambda: background_builds.process.poll() is None) if background_builds is not None else (lambda: False)
    done: dict = {}

    def export(**fields):
        options = ExportOptions(**fields)
        assert options.out is None, "export_graph chooses the file"
        key = normalized(options)
        if key not in done:
            done[key] = exports.get(options, alive)
        return done[key]

    return export


@pytest.fixture(scope="session")
def exported(export_graph):
    """The default export (random weights, seed 0, opset 17, multi, postprocess) and its report."""
    return export_graph()


@pytest.fixture(scope="session")
def exported_model(exported):
    import onnx

    return onnx.load(str(exported.path))


@pytest.fixture(scope="session")
def exported_all(export_graph):
    """A single-image graph with every mask token (--mask-output all): serves both multimask settings."""
    from segdeploy.contract import MaskOutput

    return export_graph(mask_output=MaskOutput.ALL)


@pytest.fixture(scope="session")
def exported_multi(export_graph):
    """The multi-image flavor (--multi-image --mask-output all), random weights seed 0."""
    from segdeploy.contract import MaskOutput

    return export_graph(mask_output=MaskOutput.ALL, multi_image=True)


# SAM 2 family session graphs (random weights, seed 0)


@pytest.fixture(scope="session")
def sam2_exported(export_graph):
    """The default SAM 2.1 export (few-token attention, matmul upscaling, multi, postprocess), seed 0."""
    return export_graph(variant="sam2.1_hiera_tiny")


@pytest.fixture(scope="session")
def sam2_multi(export_graph):
    """The multi-image flavor in the TensorRT form (plain attention, ConvTranspose upscaling), all masks."""
    from segdeploy.contract import MaskOutput
    from segdeploy.forms import Target

    return export_graph(variant="sam2_hiera_small", multi_image=True, mask_output=MaskOutput.ALL, target=Target.TENSORRT)


@pytest.fixture(scope="session")
def sam2_fp16(export_graph):
    """A typed fp16 graph in the TensorRT form with the stability-based single mask."""
    from segdeploy.contract import MaskOutput
    from segdeploy.forms import Precision, Target

    return export_graph(variant="sam2.1_hiera_tiny", target=Target.TENSORRT, precision=Precision.FP16, mask_output=MaskOutput.SINGLE)


@pytest.fixture(scope="session")
def sam2_all(export_graph):
    """A single-image SAM 2.1 graph with every mask token (serves both multimask settings), seed 0."""
    from segdeploy.contract import MaskOutput

    return export_graph(variant="sam2.1_hiera_tiny", mask_output=MaskOutput.ALL)


# AOTInductor: one package per family and one C++ build per session, made by one background process
# (tests/background_builds.py) while the other tests run; the tests that use them run last. Shared
# by tests/test_aoti.py, test_sam2_runtime.py and the README test (which reuses them for its own
# identical commands instead of compiling again).

CPP_TOOLS_HINT = "apt-get install -y cmake g++ (the Makefile's `make check-tools` says what is missing)"
BUILT_IN_BACKGROUND = ("package", "cpp_example", "sam2_package")


def _uses_background_builds(item) -> bool:
    return any(name in getattr(item, "fixturenames", ()) for name in BUILT_IN_BACKGROUND)


@pytest.fixture(scope="session", autouse=True)
def background_builds(request, tmp_path_factory):
    """Started with the session's first test when any collected test needs what it builds."""
    if not request.config.stash.get(NEEDS_BUILDS, False):
        yield None
        return
    import shutil

    from background_builds import BackgroundBuilds

    from segdeploy.aoti.builder import require_toolchain
    from segdeploy.errors import MissingDependencyError

    try:
        require_toolchain("cpu")
    except MissingDependencyError as error:
        pytest.fail(f"{error}; {CPP_TOOLS_HINT}")
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the C++ example needs {' and '.join(missing)}: {CPP_TOOLS_HINT}")
    builds = BackgroundBuilds(tmp_path_factory.mktemp("background-builds"), request.getfixturevalue("export_folder"))
    yield builds
    builds.stop()


@pytest.fixture(scope="session")
def package(background_builds) -> Path:
    """The default graph (few-token form, postprocessing; the bytes of ``exported``) compiled for the
    CPU at the README's ranges."""
    return background_builds.wait("package")


@pytest.fixture(scope="session")
def cpp_example(background_builds) -> Path:
    """examples/cpp built against the torch wheel's libtorch."""
    return background_builds.wait("cpp_example")


@pytest.fixture(scope="session")
def sam2_package(background_builds) -> Path:
    """A SAM 2.1 graph with every mask token (the bytes of ``sam2_all``) compiled by AOTInductor for
    the CPU at small ranges."""
    return background_builds.wait("sam2_package")


def pytest_terminal_summary(terminalreporter):
    """How many examples each Hypothesis property test tried (tests/fuzz_counts.py), with or without -s."""
    from fuzz_counts import TRIED

    if TRIED:
        terminalreporter.write_line("hypothesis examples tried: " + ", ".join(f"{target} {count}" for target, count in sorted(TRIED.items())))
