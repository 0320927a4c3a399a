"""`segdeploy serve`: a real Triton Inference Server (the tritonserver binary the nvidia-pytriton
wheel ships) serving ``sam_decoder`` over KServe v2 HTTP and gRPC, from a model repository whose
Python-backend model runs ``segdeploy.Decoder`` (serving/triton_model.py) with Triton's dynamic batcher."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.errors import BadInputError, CheckFailedError, MissingDependencyError
from segdeploy.serving.model_config import MODEL_NAME, serve_config

INSTALL_HINT = "pip install 'segdeploy[serve]'"
STARTUP_SECONDS = 180.0
STOP_SECONDS = 20.0
SHM_BYTES = 64 << 20
DEFAULT_STORE_BYTES = 2 << 30  # 2 GiB: ~500 SAM 1 images (4 MiB each), ~120 SAM 2 images
MODEL_PY = '''"""Triton Python-backend model written by segdeploy: runs segdeploy.Decoder (see its config.pbtxt)."""
import sys

sys.path[:0] = {paths!r}
from segdeploy.serving.triton_model import TritonPythonModel  # noqa: E402,F401
'''


@dataclass(frozen=True)
class ServeOptions:
    source: Path | None = None  # anything Decoder.load takes; None: seeded random weights, eager
    backend: str = "auto"
    threads: int | None = None
    checkpoint: Path | None = None
    address: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch_size: int = 64
    max_queue_delay_us: int | None = 2000  # None: no dynamic batcher, every request alone
    instances: int = 1
    image_store: str = "shared"  # memory, shared (this server's instances), shared:PATH or redis://HOST:PORT/DB
    image_store_bytes: int = DEFAULT_STORE_BYTES
    encoder: Path | None = None  # an image-encoder .onnx: registration by image
    max_call_bytes: int | None = None  # each instance's Decoder splits a dynamic batch into calls under this (None: its default)


@dataclass
class TritonDistribution:
    """Where the pieces of the wheel's Triton are: the server binary, its libraries, the Python backend
    and the Python-backend stub built for this interpreter's version."""

    binary: Path
    libraries: Path
    python_backend: Path
    stub: Path


def find_triton() -> TritonDistribution:
    """The tritonserver of the nvidia-pytriton wheel, or MissingDependencyError."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"segdeploy serve needs Triton Inference Server from the nvidia-pytriton wheel; {INSTALL_HINT}")
    root = Path(spec.submodule_search_locations[0])
    dist = root / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    libraries = next((p for p in (root.parent / "nvidia_pytriton.libs", dist / "external_libs") if p.is_dir()), root.parent / "nvidia_pytriton.libs")
    found = TritonDistribution(dist / "bin" / "tritonserver", libraries, dist / "backends" / "python", dist / "python_backend_stubs" / version / "triton_python_backend_stub")
    if not found.binary.is_file():
        raise MissingDependencyError(f"the nvidia-pytriton wheel here has no tritonserver binary ({found.binary}); {INSTALL_HINT}")
    if not found.stub.is_file():
        raise MissingDependencyError(f"nvidia-pytriton ships no Python-backend stub for Python {version}; use CPython 3.8-3.13")
    return found


def libpython_dir() -> Path:
    """The folder of this interpreter's shared libpython, which Triton's Python-backend stub loads."""
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("LDLIBRARY") or ""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir or not (Path(libdir) / library).is_file():
        raise BadInputError(f"segdeploy serve needs a CPython with a shared libpython (built with --enable-shared); {sys.executable} has none")
    return Path(libdir)


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def write_repository(folder: Path, options: ServeOptions, *, python_paths: list[str] | None, kind: str = "KIND_CPU") -> Path:
    """A model repository with ``sam_decoder`` as a Python-backend model running segdeploy.Decoder.
    ``python_paths`` go first on the stub's sys.path (this interpreter's, for `serve`); None leaves
    the server's own environment to provide segdeploy (a repository for another server)."""
    model = folder / MODEL_NAME
    (model / "1").mkdir(parents=True, exist_ok=True)
    loader = {"backend": options.backend, "threads": options.threads, "checkpoint": None if options.checkpoint is None else str(options.checkpoint),
              "max_call_bytes": options.max_call_bytes}
    parameters = {
        "segdeploy_source": "" if options.source is None else str(options.source),
        "segdeploy_options": json.dumps({k: v for k, v in loader.items() if v is not None}),
        "segdeploy_image_store": options.image_store,
        "segdeploy_image_store_bytes": str(options.image_store_bytes),
        "segdeploy_encoder": "" if options.encoder is None else str(options.encoder),
    }
    (model / "config.pbtxt").write_text(serve_config(options.max_batch_size, options.max_queue_delay_us, parameters, options.instances, kind))
    paths = python_paths if python_paths is not None else []
    (model / "1" / "model.py").write_text(MODEL_PY.format(paths=paths))
    return folder


def _python_paths() -> list[str]:
    """This process's import path, with segdeploy's own source root first (editable installs add it
    through a .pth hook that the stub's interpreter would not run)."""
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the segdeploy package
    return [root] + [p for p in sys.path if p and p != root and Path(p).exists()]


@dataclass
class RunningServer:
    """A started tritonserver; ``stop()`` ends it and every process it started."""

    process: subprocess.Popen
    workspace: Path
    options: ServeOptions
    log_path: Path
    _temp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    store_files: list[Path] = field(default_factory=list)  # this server's own shared image store, removed at stop

    @property
    def http_url(self) -> str:
        return f"{self.options.address}:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.options.address}:{self.options.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.options.address}:{self.options.metrics_port}/metrics"

    def is_running(self) -> bool:
        return self.process.poll() is None

    def wait(self) -> int:
        return self.process.wait()

    def stop(self) -> int:
        """SIGTERM to the server's process group (server and Python-backend stubs), then SIGKILL
        after STOP_SECONDS; returns the server's exit code."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.process.pid, signal.SIGKILL)  # stragglers of the group (stubs), if any
        code = self.process.wait()
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None
        for path in self.store_files:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return code

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies, however it dies
    (a killed `segdeploy serve` must not leave a server behind). Linux only; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _ready(options: ServeOptions) -> bool:
    url = f"http://{options.address}:{options.http_port}/v2/models/{MODEL_NAME}/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def check_options(options: ServeOptions) -> None:
    ports = [options.http_port, options.grpc_port, options.metrics_port]
    if len(set(ports)) != 3 or not all(0 < p < 65536 for p in ports):
        raise BadInputError(f"--http-port, --grpc-port and --metrics-port must be three different ports in 1..65535, got {ports}")
    if options.max_batch_size < 1:
        raise BadInputError("--max-batch-size must be at least 1")
    if options.max_queue_delay_us is not None and options.max_queue_delay_us < 0:
        raise BadInputError("--max-queue-delay-us must be at least 0")
    if options.instances < 1:
        raise BadInputError("--instances must be at least 1")
    if options.image_store == "memory" and options.instances > 1:
        raise BadInputError("--image-store memory keeps images inside one model instance; with --instances > 1 use shared (the default) or redis://")
    if options.encoder is not None and not Path(options.encoder).is_file():
        raise BadInputError(f"encoder not found: {options.encoder}")
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tritonserver binds: a port in TIME_WAIT is free, a listener is not
            try:
                probe.bind((options.address, port))
            except OSError as exc:
                raise BadInputError(f"cannot listen on {options.address}:{port} ({exc.strerror or exc})") from None


def start_server(options: ServeOptions, progress=None) -> RunningServer:
    """Check what serving needs, write the repository, start tritonserver and wait until
    ``sam_decoder`` is ready; CheckFailedError (with the log's last line) if it never gets there."""
    say = progress or (lambda _message: None)
    check_options(options)
    triton, libdir = find_triton(), libpython_dir()  # what serving needs, checked before anything starts: one line each
    if options.source is not None and not Path(options.source).is_file():
        raise BadInputError(f"model not found: {options.source}")
    from segdeploy.serving.image_store import default_shared_path, open_image_store

    store_files = []
    if options.image_store == "shared":  # this server's instances share one store of their own
        path = default_shared_path().with_name(f"segdeploy-serve-{os.getpid()}-{options.http_port}.sqlite")
        options = ServeOptions(**{**options.__dict__, "image_store": f"shared:{path}"})
        store_files.append(path)
    open_image_store(options.image_store, options.image_store_bytes).close()  # a bad spec, Redis down: one line here
    if options.source is not None or options.encoder is not None:  # fail here, in one line, rather than inside the server's log
        from segdeploy.runtime import Decoder

        with Decoder.load(options.source, backend=options.backend, checkpoint=options.checkpoint) as decoder:
            if options.encoder is not None:
                from segdeploy.serving.encoder import ImageEncoder

                ImageEncoder(options.encoder, decoder.family.image_specs())
    temp = tempfile.TemporaryDirectory(prefix="segdeploy-serve-")
    workspace = Path(temp.name)
    say("writing the model repository")
    source = None if options.source is None else Path(options.source).resolve()
    checkpoint = None if options.checkpoint is None else Path(options.checkpoint).resolve()
    encoder = None if options.encoder is None else Path(options.encoder).resolve()
    resolved = ServeOptions(**{**options.__dict__, "source": source, "checkpoint": checkpoint, "encoder": encoder})
    write_repository(workspace / "models", resolved, python_paths=_python_paths())
    return _launch(triton, libdir, workspace / "models", options, temp, store_files, say)


def serve_repository(models: Path, options: ServeOptions, *, python_paths: list[str] | None = None, progress=None) -> RunningServer:
    """Start the wheel's tritonserver on ``models``, a repository written for a server of its own
    (``segdeploy triton-repo --backend python``), at ``options``' address and ports, and wait until
    ``sam_decoder`` is ready. ``python_paths`` go on the server's PYTHONPATH, where that server's
    environment would provide segdeploy."""
    check_options(options)
    triton, libdir = find_triton(), libpython_dir()
    if not (Path(models) / MODEL_NAME / "config.pbtxt").is_file():
        raise BadInputError(f"{models} holds no {MODEL_NAME}/config.pbtxt; write one with `segdeploy triton-repo`")
    temp = tempfile.TemporaryDirectory(prefix="segdeploy-serve-")
    environment = {"PYTHONPATH": os.pathsep.join(python_paths)} if python_paths else {}
    return _launch(triton, libdir, Path(models).resolve(), options, temp, [], progress or (lambda _message: None), environment)


def _launch(triton: TritonDistribution, libdir: Path, models: Path, options: ServeOptions, temp: tempfile.TemporaryDirectory, store_files: list[Path], say,
            environment: dict[str, str] | None = None) -> RunningServer:
    """Start ``triton`` (find_triton's) on the repository ``models`` with the wheel's Python backend
    and ``libdir``'s libpython, its workspace in ``temp``; wait until ``sam_decoder`` is ready
    (CheckFailedError with the log's last error line if it never gets there)."""
    workspace = Path(temp.name)
    backends = workspace / "backends" / "python"
    backends.mkdir(parents=True)
    for item in triton.python_backend.iterdir():
        if item.is_file():
            (backends / item.name).symlink_to(item)
    (backends / "triton_python_backend_stub").symlink_to(triton.stub)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(triton.libraries), str(libdir), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    env.update(environment or {})
    command = [
        str(triton.binary), f"--model-repository={models}", f"--backend-directory={workspace / 'backends'}",
        f"--http-address={options.address}", f"--http-port={options.http_port}",
        f"--grpc-address={options.address}", f"--grpc-port={options.grpc_port}",
        f"--metrics-address={options.address}", f"--metrics-port={options.metrics_port}", "--allow-metrics=true",
        "--exit-timeout-secs=10", "--strict-readiness=true", f"--cache-directory={workspace / 'cache'}",
        # requests carry 4 MB embeddings: start the Python backend's shared memory big enough for a batch
        f"--backend-config=python,shm-default-byte-size={SHM_BYTES}", f"--backend-config=python,shm-growth-byte-size={SHM_BYTES // 4}",
    ]
    log_path = workspace / "tritonserver.log"
    say("starting tritonserver")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    server = RunningServer(process, workspace, options, log_path, temp, store_files)
    deadline = time.monotonic() + STARTUP_SECONDS
    say("waiting for sam_decoder to be ready")
    try:
        while not _ready(options):
            if not server.is_running() or time.monotonic() > deadline:
                tail = [line for line in server.log_tail(40).splitlines() if "error" in line.lower() or "failed" in line.lower()]
                reason = tail[-1].strip() if tail else f"not ready after {STARTUP_SECONDS:.0f}s"
                raise CheckFailedError(f"tritonserver did not bring up {MODEL_NAME}: {reason[:300]}")
            time.sleep(0.5)
    except BaseException:  # a failed start, or Ctrl-C/SIGTERM while waiting: the server goes too
        server.stop()
        raise
    return server
