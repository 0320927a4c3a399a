"""The floor graphs (FLOPs matched, Resize equal to torch's bilinear) and the interleaved measurement."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from segdeploy.bench import bench_feeds
from segdeploy.floor import floor_graphs, matmul_shape, measure_floor, model_flops, time_interleaved
from segdeploy.flops import count_flops
from segdeploy.registry import get_family

SAM1 = get_family("sam1")


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_matmul_flops_match_requests(rng):
    requests = np.concatenate([[2.15e9, 3.44e10], 10 ** rng.uniform(6.5, 11, size=20)])
    for flops in requests:
        matmul, _ = floor_graphs(float(flops), masks=3, prompts=1, out_size=(8, 8))
        m, k, n = matmul_shape(float(flops))
        assert (m % 64, k) == (0, 256)
        assert abs(model_flops(matmul) - flops) / flops < 0.02, (flops, m, n)
    assert matmul_shape(2.15e9) == (4096, 256, 1025)  # SAM's B=1, 3-point count: 4096x256 @ 256x1024


@pytest.mark.parametrize("out_size", [(1024, 1024), (600, 900), (200, 130)])
def test_floor_graphs_run_and_resize_is_torch_bilinear(rng, out_size):
    matmul, resize = floor_graphs(1e8, masks=3, prompts=2, out_size=out_size)
    onnx.checker.check_model(matmul)
    onnx.checker.check_model(resize)
    m, k, n = matmul_shape(1e8)
    a = rng.standard_normal((m, k), dtype=np.float32)
    weight = onnx.numpy_helper.to_array(matmul.graph.initializer[0])
    (y,) = session(matmul).run(None, {"a": a})
    np.testing.assert_allclose(y, a @ weight, rtol=1e-4, atol=1e-3)
    low = rng.random((2, 3, 256, 256), dtype=np.float32)  # in [0, 1): at non-dyadic scales the two round the source coordinate
    # differently (~1e-7 of 256 pixels), which N(0,1) data's steeper neighbours turn into ~1.3e-4
    (masks,) = session(resize).run(None, {"low_res": low})
    expected = torch.nn.functional.interpolate(torch.from_numpy(low), size=out_size, mode="bilinear", align_corners=False).numpy()
    assert masks.shape == (2, 3, *out_size)
    np.testing.assert_allclose(masks, expected, atol=1e-4, rtol=0)


def test_blocks_alternate():
    calls: list[str] = []
    fakes = {label: (lambda label=label: calls.append(label)) for label in ("graph", "matmul", "resize")}
    times, order = time_interleaved(fakes, runs=7, block=3, settle_s=0.0)
    assert {label: len(t) for label, t in times.items()} == {"graph": 7, "matmul": 7, "resize": 7}
    assert order == ("graph", "matmul", "resize") * 3
    expected = [label for count in (3, 3, 1) for label in ("graph",) * (count + 1) + ("matmul",) * (count + 1) + ("resize",) * (count + 1)]
    assert calls == expected  # one untimed settle call, then the block's timed calls, session after session


def test_measure_floor_on_an_exported_graph(exported, rng):
    feeds = bench_feeds(2, 3, (300, 400), rng, postprocess=True, family=SAM1)
    report = measure_floor(exported.path, feeds, runs=4, block=2)
    assert report.floor_ms > 0 and report.graph_ms > 0
    assert report.floor_ms == pytest.approx(report.matmul_ms + report.resize_ms)
    assert report.ratio == pytest.approx(report.graph_ms / report.floor_ms)
    assert report.gemm_gflops == pytest.approx(report.matmul_flops / report.matmul_ms / 1e6)
    assert (report.prompts, report.masks, report.out_size) == (2, 3, (300, 400))
    assert report.graph_flops == count_flops(exported.path, feeds).total
    assert abs(report.matmul_flops - report.graph_flops) / report.graph_flops < 0.02
    assert report.order == ("graph", "matmul", "resize") * 2
    summary = report.to_dict()
    assert summary["ratio"] == report.ratio and summary["matmul_shape"] == report.matmul_shape
    assert report.describe().startswith("floor ") and f"{report.ratio:.2f}x the floor" in report.describe()


def test_measure_floor_takes_a_model(exported_model, rng):
    feeds = bench_feeds(1, 2, (64, 64), rng, postprocess=True, family=SAM1)
    report = measure_floor(exported_model, feeds, runs=1, block=1, threads=1)
    assert report.order == ("graph", "matmul", "resize") and report.threads == 1 and report.ratio > 0


def test_settling_is_timed_not_counted():
    """Each block settles for settle_s of untimed calls (a session that needs several calls to get
    back to speed after another's gets them all), then times its block."""
    log: list[str] = []

    def fake(label):
        def call():
            log.append(label)
            time.sleep(0.01)
        return call

    times, order = time_interleaved({"a": fake("a"), "b": fake("b")}, runs=2, block=2, settle_s=0.05)
    assert {label: len(t) for label, t in times.items()} == {"a": 2, "b": 2} and order == ("a", "b")
    switch = log.index("b")
    assert set(log[:switch]) == {"a"} and set(log[switch:]) == {"b"}
    assert switch >= 5 + 2 and len(log) - switch >= 5 + 2  # >= 5 settling calls of 10 ms in 50 ms, then 2 timed


def test_flops_of_the_fp16_graph_are_the_fp32_ones(exported, export_graph, rng, tmp_path):
    """The fp16 onnxruntime graph does the same matrix work; its If sides are inlined with names of
    their own even where a subgraph's nodes have none (a foreign graph's may not: `bench` on the
    fp16 graph once failed on six inlined nodes all named `mask_branch_0/If/`)."""
    from segdeploy.forms import Precision

    fp16 = export_graph(precision=Precision.FP16)
    feeds = bench_feeds(2, 3, (1024, 1024), rng, postprocess=True, family=SAM1)
    expected = count_flops(exported.path, feeds).total
    assert count_flops(fp16.path, feeds).total == expected
    model = onnx.load(str(fp16.path))
    branches = [attr.g for node in model.graph.node if node.op_type == "If" for attr in node.attribute]
    assert branches and all(inner.name for graph in branches for inner in graph.node)  # export names every node
    for graph in branches:
        for inner in graph.node:
            inner.name = ""
    unnamed = tmp_path / "unnamed.onnx"
    onnx.save(model, str(unnamed))
    assert count_flops(unnamed, feeds).total == expected
