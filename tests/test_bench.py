"""bench runs and writes its files (never a speed assertion: speed lives in benchmarks/)."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from segdeploy.bench import BenchOptions, BenchReport, BenchRow, plot_figure, run_bench
from segdeploy.cli import app
from segdeploy.registry import get_family

SAM1 = get_family("sam1")


def test_bench_with_official_baseline_writes_json_csv_png(exported, tmp_path):
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


def test_official_baseline_imports_without_torchvision():
    """segment-anything's __init__ imports torchvision; its modeling and ONNX wrapper must not need it."""
    script = (
        "import sys; sys.modules['torchvision'] = None\n"  # None in sys.modules: every import of it fails
        "from segdeploy.families.sam1.baseline import import_official\n"
        "modeling, onnx_utils = import_official()\n"
        "print(modeling.MaskDecoder.__module__, onnx_utils.SamOnnxModel.__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["segment_anything.modeling.mask_decoder", "segment_anything.utils.onnx"]


def test_bench_official_baseline_without_segment_anything_names_the_install(exported, tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "segment_anything", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "segment_anything" else find_spec(name, *a))
    result = CliRunner().invoke(app, [
        "bench", "--onnx", str(exported.path), "--baseline", "official", "--prompts", "1", "--points", "2",
        "--runs", "1", "--warmup", "0", "--out-dir", str(tmp_path),
    ])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "pip install 'segdeploy[official]'" in result.output
    assert "segment-anything==1.0" in result.output


def test_plot_y_axis_starts_at_zero():
    import matplotlib.pyplot as plt

    rows = [BenchRow("onnxruntime", b, 2, 1, 100.0 + b, 100.0 + b, 100.0 + b, 100.0 + b, 10.0) for b in (1, 4)]
    report = BenchReport(graph="g.onnx", form="f", machine={"cpu": "cpu", "threads": 2}, options={}, rows=rows)
    figure = plot_figure(report)
    bottom, top = figure.axes[0].get_ylim()
    plt.close(figure)
    assert bottom == 0 and top >= 104


def test_onnxruntime_threads_stop_spinning_only_beside_a_torch_backend(exported):
    from segdeploy.bench import quiet_onnxruntime_threads
    from segdeploy.runners.ort_runner import OrtRunner

    def ort() -> OrtRunner:
        return OrtRunner(exported.path, SAM1.layout().inputs(), ["masks", "iou_predictions", "low_res_masks"])

    alone = {"onnxruntime": ort()}
    assert not quiet_onnxruntime_threads(alone) and alone["onnxruntime"].spinning
    mixed = {"onnxruntime": ort(), "torch": object()}
    assert quiet_onnxruntime_threads(mixed) and not mixed["onnxruntime"].spinning
    with mixed["onnxruntime"] as runner:  # the session option is accepted
        assert runner.session is not None
