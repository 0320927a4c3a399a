"""The floor of a decode on this machine, measured in one run: one MatMul with the graph's matrix
FLOPs at onnxruntime's GEMM speed, plus the output pass the contract cannot avoid (a bilinear Resize
of the low-res masks to the graph's mask output size). Ours is reported as a ratio of that floor.

The graph, the MatMul and the Resize run in one process on three sessions with onnxruntime's default
options, interleaved in short blocks: each block is untimed calls for ``SETTLE_S`` (the previous
session's idle workers stop spinning and the caches take this session's data) and then ``block``
timed calls."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segdeploy import contract
from segdeploy.errors import BadInputError

if TYPE_CHECKING:
    import onnx

OPSET = 17
INNER = 256  # k: SAM's embedding width
WIDTH = 1024  # n before the final fit: a 4096x256 @ 256x1024 product is SAM's B=1, 3-point count
ROWS_STEP = 64  # m is a multiple of this


@dataclass(frozen=True)
class FloorReport:
    """p50 times of our graph and of the two floor graphs, measured interleaved in one process."""

    graph: str
    prompts: int
    masks: int
    out_size: tuple[int, int]
    graph_flops: int  # the graph's matrix FLOPs on these feeds (segdeploy.flops)
    matmul_shape: tuple[int, int, int]  # (m, k, n) of the floor MatMul
    matmul_flops: int  # 2*m*k*n
    runs: int
    block: int
    threads: int | None  # None: onnxruntime's defaults
    graph_ms: float
    matmul_ms: float
    resize_ms: float
    order: tuple[str, ...]  # the session of each timed block, in the order they ran

    @property
    def floor_ms(self) -> float:
        return self.matmul_ms + self.resize_ms

    @property
    def ratio(self) -> float:
        """Ours over the floor."""
        return self.graph_ms / self.floor_ms

    @property
    def gemm_gflops(self) -> float:
        return self.matmul_flops / self.matmul_ms / 1e6

    def to_dict(self) -> dict:
        return asdict(self) | {"floor_ms": self.floor_ms, "ratio": self.ratio, "gemm_gflops": self.gemm_gflops}

    def describe(self) -> str:
        return (
            f"floor {self.floor_ms:.1f} ms (MatMul {self.matmul_ms:.1f} ms at {self.gemm_gflops:.0f} GFLOP/s"
            f" + mask output {self.resize_ms:.1f} ms); ours {self.graph_ms:.1f} ms = {self.ratio:.2f}x the floor"
        )


def matmul_shape(flops: float) -> tuple[int, int, int]:
    """(m, k, n) with 2*m*k*n close to ``flops``: k = 256, m the multiple of 64 nearest
    flops / (2*256*1024) (at least 64), then n the integer that fits best. n stays near 1024 for
    counts above ~1 GFLOP (error under 0.05% there); small counts get m = 64 and a narrower n."""
    if flops <= 0:
        raise BadInputError(f"the floor needs a positive FLOP count, got {flops}")
    m = max(ROWS_STEP, ROWS_STEP * round(flops / (2 * INNER * WIDTH * ROWS_STEP)))
    n = max(1, round(flops / (2 * m * INNER)))
    return m, INNER, n


def floor_graphs(flops: float, masks: int, prompts: int, out_size: tuple[int, int], seed: int = 0) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(matmul, resize) models at opset 17. matmul: ``a`` [m,256] @ a [256,n] initializer -> ``y``
    (shape from ``matmul_shape``). resize: ``low_res`` [prompts,masks,256,256] -> ``masks``
    [prompts,masks,H,W], linear with half_pixel coordinates (bilinear, align_corners=False), the
    sizes a constant initializer."""
    from onnx import TensorProto, helper, numpy_helper

    if masks < 1 or prompts < 1 or min(out_size) < 1:
        raise BadInputError(f"masks, prompts and the output size must be positive, got {masks}, {prompts}, {out_size}")
    m, k, n = matmul_shape(flops)
    weight = np.random.default_rng(seed).standard_normal((k, n), dtype=np.float32)
    matmul = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"])], "floor_matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(weight, "w")],
    )
    low = contract.LOW_RES_SIZE
    height, width = out_size
    sizes = np.array([prompts, masks, height, width], np.int64)
    resize = helper.make_graph(
        [helper.make_node("Resize", ["low_res", "", "", "sizes"], ["masks"], mode="linear", coordinate_transformation_mode="half_pixel")],
        "floor_resize",
        [helper.make_tensor_value_info("low_res", TensorProto.FLOAT, [prompts, masks, low, low])],
        [helper.make_tensor_value_info("masks", TensorProto.FLOAT, [int(s) for s in sizes])],
        [numpy_helper.from_array(sizes, "sizes")],
    )
    opsets = [helper.make_opsetid("", OPSET)]
    return helper.make_model(matmul, opset_imports=opsets), helper.make_model(resize, opset_imports=opsets)


def model_flops(model: onnx.ModelProto) -> int:
    """2*m*k*n of a one-MatMul model, from its declared input and output shapes."""
    (a,), (y,) = model.graph.input, model.graph.output
    m, k = (d.dim_value for d in a.type.tensor_type.shape.dim)
    n = y.type.tensor_type.shape.dim[1].dim_value
    return 2 * m * k * n


def floor_calls(flops: float, masks: tuple[int, ...], options=None, seed: int = 0) -> dict[str, Callable[[], object]]:
    """The floor's two graphs (``floor_graphs`` for ``flops`` and a [B, M, H, W] ``masks`` output) as
    calls on sessions of their own with ``options`` (onnxruntime's defaults when None), each on
    random inputs drawn from ``seed``: {"matmul": ..., "resize": ...}."""
    import onnxruntime as ort

    prompts, count, height, width = masks
    matmul_model, resize_model = floor_graphs(flops, count, prompts, (height, width), seed)
    matmul = ort.InferenceSession(matmul_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    resize = ort.InferenceSession(resize_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    m, k, _ = matmul_shape(flops)
    a = {"a": rng.standard_normal((m, k), dtype=np.float32)}
    low = contract.LOW_RES_SIZE
    low_res = {"low_res": rng.standard_normal((prompts, count, low, low), dtype=np.float32)}
    return {"matmul": lambda: matmul.run(None, a), "resize": lambda: resize.run(None, low_res)}


def measure_floor(
    graph: Path | str | onnx.ModelProto, feeds: Mapping[str, np.ndarray], runs: int, threads: int | None = None, block: int = 5, seed: int = 0,
    spinning: bool = True,
) -> FloorReport:
    """Time ``graph`` on ``feeds`` beside its floor graphs (MatMul matched to the graph's FLOPs on
    these feeds, Resize to its ``masks`` output), ``runs`` timed calls each, interleaved in blocks.
    ``spinning=False`` sets session.intra_op.allow_spinning=0 on all three sessions (what a runner
    with ``spinning = False`` runs with; on a machine shared with other work idle spinning costs
    the many-node graph far more than the one-node floor graphs)."""
    import onnx
    import onnxruntime as ort

    from segdeploy.flops import count_flops

    if runs < 1 or block < 1:
        raise BadInputError("runs and block must be at least 1")
    feeds = dict(feeds)
    with tempfile.TemporaryDirectory(prefix="segdeploy-floor-") as scratch:
        path = Path(graph) if not isinstance(graph, onnx.ModelProto) else Path(scratch) / "graph.onnx"
        if isinstance(graph, onnx.ModelProto):
            onnx.save(graph, str(path))
        flops = count_flops(path, feeds)
        options = ort.SessionOptions()
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        ours = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    masks = ours.run(["masks"], feeds)[0].shape if "masks" in {o.name for o in ours.get_outputs()} else None
    if masks is None or len(masks) != 4:
        raise BadInputError("the floor needs a graph with a 4-D `masks` output [B, M, H, W]")
    prompts, count, height, width = masks
    m, k, n = matmul_shape(flops.total)
    calls = {"graph": lambda: ours.run(None, feeds), **floor_calls(flops.total, masks, options, seed)}
    times, order = time_interleaved(calls, runs, block)
    p50 = {label: float(np.percentile(np.array(t) * 1000.0, 50)) for label, t in times.items()}
    return FloorReport(
        graph=str(graph) if not isinstance(graph, onnx.ModelProto) else (graph.graph.name or "model"),
        prompts=int(prompts), masks=int(count), out_size=(int(height), int(width)),
        graph_flops=int(flops.total), matmul_shape=(m, k, n), matmul_flops=2 * m * k * n,
        runs=runs, block=block, threads=threads,
        graph_ms=p50["graph"], matmul_ms=p50["matmul"], resize_ms=p50["resize"], order=order,
    )


SETTLE_S = 0.15  # untimed calls per block, at least this long: the session before goes quiet


def time_interleaved(
    calls: Mapping[str, Callable[[], object]], runs: int, block: int, settle_s: float = SETTLE_S,
) -> tuple[dict[str, list[float]], tuple[str, ...]]:
    """Rounds of blocks over ``calls`` in order until each has ``runs`` timed calls: per block
    untimed calls for ``settle_s`` (one at least), then up to ``block`` timed ones. Returns seconds
    per label and the block order.

    The settling is timed, not counted: after our graph's session, onnxruntime's idle workers keep
    spinning for a while, and the floor's MatMul ran 15.4, 14.6, 10.7, 11.3 ms in its first four
    calls and 6.4-6.7 ms from the fifth on (B=1, 2 threads, this project's VM). One settling call
    left those slow calls in the timed block, and the floor looked ~1.5x slower than it is."""
    times: dict[str, list[float]] = {label: [] for label in calls}
    order: list[str] = []
    while any(len(t) < runs for t in times.values()):
        for label, call in calls.items():
            count = min(block, runs - len(times[label]))
            settle_until = time.perf_counter() + settle_s
            call()  # settle: the previous session's workers stop spinning, caches take this one's data
            while time.perf_counter() < settle_until:
                call()
            for _ in range(count):
                started = time.perf_counter()
                call()
                times[label].append(time.perf_counter() - started)
            order.append(label)
    return times, tuple(order)
