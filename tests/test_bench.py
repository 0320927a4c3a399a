"""bench runs and writes its files (never a speed assertion: speed lives in benchmarks/)."""

from __future__ import annotations

import csv
import json

import pytest
from oracle import _modeling
from typer.testing import CliRunner

from segdeploy.bench import BenchOptions, run_bench
from segdeploy.cli import app


def test_bench_with_official_baseline_writes_json_csv_png(exported, tmp_path):
    _modeling()  # the official package without its torchvision-importing __init__ (test setup only)
    report = run_bench(BenchOptions(
        onnx=exported.path, backends=("onnxruntime", "torch"), prompts=(1, 2), points=(2,), orig_size=(96, 128),
        runs=2, warmup=0, baseline="official", out_dir=tmp_path, name="t",
    ))
    labels = {(r.backend, r.prompts) for r in report.rows}
    assert labels == {(b, p) for b in ("onnxruntime", "torch", "official") for p in (1, 2)}
    for row in report.rows:
        assert row.runs == 2 and row.p50_ms > 0 and row.p50_ms <= row.p99_ms
        assert row.ratio_to_baseline is not None
    assert {p.split("/")[-1] for p in report.files} == {"t.json", "t.csv", "t.png"}
    assert json.loads((tmp_path / "t.json").read_text())["rows"][0]["backend"] == "onnxruntime"
    assert len(list(csv.DictReader((tmp_path / "t.csv").open()))) == 6
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_cli(exported, tmp_path):
    result = CliRunner().invoke(app, [
        "bench", "--onnx", str(exported.path), "--prompts", "1", "--points", "2", "--runs", "1", "--warmup", "0",
        "--orig-size", "64x64", "--out-dir", str(tmp_path), "--name", "cli",
    ])
    assert result.exit_code == 0, result.output
    assert "ms/prompt" in result.output and (tmp_path / "cli.csv").is_file()


@pytest.mark.parametrize("args,message", [
    (["--prompts", "0"], "positive integers"),
    (["--orig-size", "big"], "HxW"),
    (["--backend", "tpu"], "unknown backend"),
    (["--backend", "tensorrt"], "--engine"),
    (["--baseline", "/nonexistent.onnx"], "does not exist"),
])
def test_bench_bad_input(exported, tmp_path, args, message):
    result = CliRunner().invoke(app, ["bench", "--onnx", str(exported.path), "--out-dir", str(tmp_path), "--runs", "1", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
