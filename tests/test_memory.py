"""The memory budget of a backend call: predict_batch splits a batch under max_call_bytes, with
results equal to one call; the estimate is not below what benchmarks/call_memory.py measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segdeploy import Decoder, Prompt
from segdeploy.errors import BadInputError
from segdeploy.runtime import memory
from segdeploy.runtime.memory import DEFAULT_MAX_CALL_BYTES, estimate_call_bytes, prompts_per_call

RESULTS = Path(__file__).parents[1] / "benchmarks" / "results" / "call-memory.json"
UNBOUNDED = 1 << 62


def _prompts(rng, images: int, count: int, size=(48, 80)) -> list[Prompt]:
    embeddings = [rng.standard_normal((256, 64, 64)).astype(np.float32) for _ in range(images)]
    prompts = []
    for i in range(count):
        clicks = rng.uniform(0, [size[1], size[0]], (1 + i % 3, 2))
        box = np.array([2, 3, 30, 40]) if i % 4 == 0 else None
        prompts.append(Prompt(embeddings[(i * 5) % images], size, clicks, (np.arange(len(clicks)) + i) % 2, box=box,
                              multimask_output=bool(i % 2)))
    return prompts


def _count_calls(decoder) -> list[int]:
    calls: list[int] = []
    infer = decoder.runner.infer

    def counting(feeds):
        calls.append(len(feeds["point_labels"]))
        return infer(feeds)

    decoder.runner.infer = counting
    return calls


def _budget_for(decoder, prompts: int, size=(48, 80)) -> int:
    """A budget that fits ``prompts`` prompts of up to 5 point slots per call (and no more)."""
    return estimate_call_bytes(prompts=prompts, points=5, orig_size=size, masks=len(decoder.layout.mask_output.tokens),
                               images=prompts, multi_image=decoder.layout.multi_image, attention=decoder.metadata.get("attention"))


@pytest.mark.parametrize("graph", ["exported_all", "exported_multi"])
def test_split_batch_equals_one_call(graph, request, fresh_seed):
    """Fault: a split that drops, reorders or misassigns prompts (e.g. chunks not mapped back to their
    indices, or a multi-image chunk stacking the wrong images) makes this fail."""
    path = request.getfixturevalue(graph).path
    prompts = _prompts(np.random.default_rng(fresh_seed), images=3, count=11)
    with Decoder.load(path, max_call_bytes=UNBOUNDED) as whole:
        calls = _count_calls(whole)
        expected = whole.predict_batch(prompts)
        assert len(calls) == (1 if whole.layout.multi_image else 3)  # per image on a single-image graph
    with Decoder.load(path) as probe:
        budget = _budget_for(probe, 3)
    with Decoder.load(path, max_call_bytes=budget) as split:
        calls = _count_calls(split)
        got = split.predict_batch(prompts)
    assert max(calls) <= 3 and sum(calls) == len(prompts) and len(calls) >= 4, calls
    assert len(expected) == len(got) == len(prompts)
    for a, b in zip(expected, got):
        assert a.masks.shape == b.masks.shape and (a.masks != b.masks).mean() < 1e-3
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_allclose(a.low_res_logits, b.low_res_logits, atol=1e-4)


def test_one_prompt_over_the_budget_is_refused_before_any_call(exported, rng):
    """Fault: without the check in predict_batch (or check), the call runs and this fails on the call count."""
    with Decoder.load(exported.path, max_call_bytes=1 << 20) as decoder:
        calls = _count_calls(decoder)
        prompt = _prompts(rng, 1, 2)[1]  # multimask_output=True: what this graph serves
        with pytest.raises(BadInputError, match="max_call_bytes") as error:
            decoder.predict_batch([prompt])
        with pytest.raises(BadInputError, match="max_call_bytes"):
            decoder.check(prompt)
    assert calls == [] and "\n" not in str(error.value)


@pytest.mark.parametrize("value", [0, -1, 1.5, "2GB", True])
def test_budget_must_be_positive_bytes(exported, value):
    with pytest.raises(BadInputError, match="max_call_bytes"):
        Decoder.load(exported.path, max_call_bytes=value)


def test_estimate_grows_with_prompts_points_and_size():
    base = estimate_call_bytes(prompts=4)
    assert estimate_call_bytes(prompts=8) == 2 * base
    assert estimate_call_bytes(prompts=4, points=10) > base
    assert estimate_call_bytes(prompts=4, orig_size=(1024, 1024)) > estimate_call_bytes(prompts=4, orig_size=(64, 64))
    assert estimate_call_bytes(prompts=4, orig_size=(4096, 4096), multi_image=True) == estimate_call_bytes(prompts=4, multi_image=True)
    assert prompts_per_call(DEFAULT_MAX_CALL_BYTES) >= 32  # the default is no single-prompt loop
    assert prompts_per_call(DEFAULT_MAX_CALL_BYTES, orig_size=(8192, 8192), masks=3) >= 1  # the largest allowed output fits


def test_estimate_is_not_below_the_measurement():
    """Fault: a cost table edited below benchmarks/results/call-memory.json fails here."""
    measured = json.loads(RESULTS.read_text())
    for key, entry in measured.items():
        if "/" not in key:
            continue
        flavor, attention = key.split("/")
        cost = memory.COSTS[(flavor, attention)]
        assert cost.fixed >= entry["per_prompt_bytes_64x64"], key
        assert cost.per_mask_pixel >= entry.get("per_mask_pixel_bytes", 0), key
        assert cost.per_point >= entry.get("per_point_slot_bytes", 0), key
