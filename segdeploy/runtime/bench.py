"""What the runtime adds on top of the graph: cross-image batching against a single-image call with
the same prompt count, ``predict``'s per-call Python overhead, and host-side postprocessing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from segdeploy.runtime.decoder import Decoder
from segdeploy.prompts import Prompt, check_prompt, pack_prompts


@dataclass
class RuntimeBenchReport:
    """Median milliseconds of each measured call, and the ratios the runtime is judged by."""

    multi_graph: str
    single_graph: str
    prompts: int
    images: int
    orig_size: tuple[int, int]
    runs: int
    ms: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _median_ms(call: Callable[[], object], runs: int) -> float:
    call()  # warm
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000.0 * float(np.median(times))


def _interleaved_overhead(bare: Callable[[], object], wrapped: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median ms of ``bare`` and the median of (``wrapped`` - ``bare``) over back-to-back pairs, so a
    drifting machine moves both sides of each difference alike."""
    bare(), wrapped()
    bare_ms, differences = [], []
    for _ in range(runs):
        started = time.perf_counter()
        bare()
        middle = time.perf_counter()
        wrapped()
        ended = time.perf_counter()
        bare_ms.append(middle - started)
        differences.append((ended - middle) - (middle - started))
    return 1000.0 * float(np.median(bare_ms)), 1000.0 * float(np.median(differences))


def _prompts(rng: np.random.Generator, embeddings: list[np.ndarray], count: int, size: tuple[int, int]) -> list[Prompt]:
    height, width = size
    return [
        Prompt(embeddings[i % len(embeddings)], size, np.array([[rng.uniform(0, width), rng.uniform(0, height)]]), np.array([1]))
        for i in range(count)
    ]


def bench_runtime(
    multi_graph: Path, single_graph: Path, *, prompts: int = 64, images: int = 8, orig_size: tuple[int, int] = (1024, 1024),
    runs: int = 5, threads: int | None = None, seed: int = 0,
) -> RuntimeBenchReport:
    """Time ``predict_batch`` of ``prompts`` one-click prompts on ``images`` images (multi-image
    graph, host postprocessing) against the same prompt count on one image (single-image graph,
    in-graph postprocessing); ``predict`` of one prompt against the bare graph call; and the host
    postprocessing alone."""
    rng = np.random.default_rng(seed)
    embeddings = [(0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32) for _ in range(images)]
    report = RuntimeBenchReport(str(multi_graph), str(single_graph), prompts, images, orig_size, runs)
    one_call = 1 << 40  # each batch in one backend call, as this measures (the default budget would split 64 prompts)
    with Decoder.load(multi_graph, threads=threads, max_call_bytes=one_call) as multi, \
            Decoder.load(single_graph, threads=threads, max_call_bytes=one_call) as single:
        many = _prompts(rng, embeddings, prompts, orig_size)
        one_image = _prompts(rng, embeddings[:1], prompts, orig_size)
        report.ms["predict_batch, multi-image graph"] = _median_ms(lambda: multi.predict_batch(many), runs)
        report.ms["predict_batch, one image, single-image graph"] = _median_ms(lambda: single.predict_batch(one_image), runs)
        low_res = (12.0 * rng.standard_normal((prompts, 3, 256, 256))).astype(np.float32)  # the 3 masks multimask prompts return
        report.ms["host resize of the batch's masks, one piece"] = _median_ms(lambda: single.family.upscale_on_host(low_res, orig_size), runs)

        prompt = one_image[0]
        feeds = pack_prompts([check_prompt(prompt, single.family.prompt_rules())])
        feeds |= {"image_embeddings": embeddings[0], "orig_im_size": np.array(orig_size, np.int64)}
        graph, overhead = _interleaved_overhead(
            lambda: single.runner.infer(feeds),
            lambda: single.predict(prompt.embedding, point_coords=prompt.point_coords, point_labels=prompt.point_labels, orig_size=orig_size),
            8 * runs,
        )
        report.ms["graph call, one prompt"] = graph
        report.ms["predict minus graph call, one prompt"] = overhead
    ms = report.ms
    report.ratios["cross-image batch / single-image batch (per prompt)"] = ms["predict_batch, multi-image graph"] / ms["predict_batch, one image, single-image graph"]
    report.ratios["predict overhead / graph call (one prompt)"] = overhead / graph
    report.ratios["host resize in one piece / multi-image predict_batch"] = ms["host resize of the batch's masks, one piece"] / ms["predict_batch, multi-image graph"]
    return report
