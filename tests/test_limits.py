"""Bounds on a request (output size, prompts, point slots), refused in one line before any backend
call, in Decoder and in the CLI; and the regressions of issue 19's user mistakes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from typer.testing import CliRunner

from segdeploy import Decoder, Prompt, RequestLimits
from segdeploy.cli import app
from segdeploy.errors import BadInputError

runner = CliRunner()
EMBEDDING = np.zeros((256, 64, 64), np.float32)


@pytest.fixture(scope="module")
def decoder(exported_all):
    with Decoder.load(exported_all.path) as loaded:
        calls = []
        infer = loaded.runner.infer
        loaded.runner.infer = lambda feeds: calls.append(1) or infer(feeds)
        loaded.calls = calls
        yield loaded


def _refused(decoder, prompts, match: str) -> str:
    before = len(decoder.calls)
    with pytest.raises(BadInputError, match=match) as error:
        decoder.predict_batch(prompts)
    assert len(decoder.calls) == before, "refused after a backend call"
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize("size", [(2**40, 2**40), (30000, 30000), (16385, 2000), (9000, 9000)])
def test_output_size_over_the_limit_is_refused(decoder, size):
    """Fault: without RequestLimits.check_output_size in Decoder._check_prompt, 2**40 ends in
    onnxruntime's Resize overflow and 30000x30000 in a 10.8 GB allocation."""
    _refused(decoder, [Prompt(EMBEDDING, size, [[1, 1]], [1])], "output limit")


def test_too_many_point_slots_and_prompts(decoder):
    many = np.ones((64, 2))
    _refused(decoder, [Prompt(EMBEDDING, (32, 32), many, np.ones(64))], "point slots")  # 64 + padding = 65
    few = Prompt(EMBEDDING, (32, 32), [[1, 1]], [1])
    _refused(decoder, [few] * 4097, "more than 4096 prompts")
    _refused(decoder, itertools.repeat(few), "more than 4096 prompts")  # an endless generator: no hang


def test_generators_and_tuples_are_batches(decoder):
    prompt = Prompt(EMBEDDING, (32, 32), [[1, 1]], [1])
    assert len(decoder.predict_batch(p for p in [prompt, prompt])) == 2
    assert len(decoder.predict_batch((prompt,))) == 1
    with pytest.raises(BadInputError, match="list of Prompt"):
        decoder.predict_batch(7)


def test_limits_are_configurable(exported_all):
    with Decoder.load(exported_all.path, limits=RequestLimits(max_output_side=20, max_points=3)) as small:
        with pytest.raises(BadInputError, match="output limit"):
            small.predict(EMBEDDING, point_coords=[[1, 1]], point_labels=[1], orig_size=(32, 32))
        with pytest.raises(BadInputError, match="point slots"):
            small.predict(EMBEDDING, point_coords=[[1, 1]] * 3, point_labels=[1] * 3, orig_size=(16, 16))
        assert small.predict(EMBEDDING, point_coords=[[1, 1]], point_labels=[1], orig_size=(16, 20)).masks.shape == (3, 16, 20)
    with pytest.raises(BadInputError, match="max_points"):
        RequestLimits(max_points=0)


@pytest.mark.parametrize("size, match", [("1x5000", "too elongated"), ("30000x30000", "output limit"), ("1099511627776x1099511627776", "output limit")])
def test_bench_orig_size_refused_in_one_line(exported, tmp_path, size, match):
    """Fault: without the checks in run_bench, 1x5000 is onnxruntime's 'Input dim is zero' traceback."""
    result = runner.invoke(app, ["bench", "--onnx", str(exported.path), "--orig-size", size, "--out-dir", str(tmp_path), "--runs", "1", "--warmup", "0"])
    assert result.exit_code == 2, result.output
    assert match in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bench_prompts_and_points_bounded(exported, tmp_path):
    base = ["bench", "--onnx", str(exported.path), "--out-dir", str(tmp_path), "--runs", "1", "--warmup", "0"]
    for args, said in ((["--prompts", "5000"], "more than 4096 prompts"), (["--points", "65"], "65 point slots"),
                       (["--prompts", "1,3998", "--orig-size", "32x32"], "needs about"),  # ~160 GB in one call: it took the test run down once
                       (["--prompts", "64", "--max-call-bytes", "1GiB"], "above --max-call-bytes 1,024 MiB"),
                       (["--max-call-bytes", "lots"], "bad size 'lots'")):
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == 2 and said in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.output


def test_issue_19_mistakes_are_one_line_exit_2(tmp_path):
    """Each is a traceback before this change (ValueError, NotADirectoryError) or a wrong answer."""
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    result = runner.invoke(app, ["info", str(empty)])
    assert result.exit_code == 2 and "not an ONNX graph" in result.stderr
    for args in (["verify", "--seed", "-5", "--onnx", str(empty)], ["export", "--seed", "99999999999999999999"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output and "--seed" in result.stderr, args
    assert "segdeploy[serve]" in runner.invoke(app, ["serve", "--help"]).output


def test_library_seeds_are_checked():
    with pytest.raises(BadInputError, match="seed"):
        Decoder.load(None, seed=-5)
    with pytest.raises(BadInputError, match="seed"):
        Decoder.load(None, seed=99999999999999999999)
