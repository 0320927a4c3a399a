"""TensorRT on a GPU: build the decoder at fp32 and fp16, verify against eager through TensorRT,
and check the inspector's verdict. Skipped (with the reason) where TensorRT or a GPU is missing;
`make test-gpu` runs them."""

from __future__ import annotations

import pytest

from segdeploy.export import ExportOptions, export_onnx
from segdeploy.forms import Precision, Target
from segdeploy.tensorrt.builder import build_engine, plan_options
from segdeploy.tensorrt.profiles import EngineProfile, Range
from segdeploy.verify import VerifyOptions, render_report, verify_graph

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16])
def test_build_verify_inspect(tmp_path, precision, fresh_seed):
    from segdeploy.tensorrt.environment import require_tensorrt
    from segdeploy.tensorrt.inspect_engine import inspect_engine

    env = require_tensorrt()
    graph = export_onnx(ExportOptions(target=Target.TENSORRT, precision=precision, out=tmp_path / "g.onnx")).path
    profile = EngineProfile(prompts=Range(1, 8, 32), points=Range(1, 4, 16))
    options = plan_options(graph, tmp_path / "g.plan", None, env.tensorrt_version, profile=profile, timing_cache=tmp_path / "cache.bin")
    report = build_engine(options)
    assert report.plan.is_file() and report.sidecar.is_file()
    result = verify_graph(VerifyOptions(onnx=graph, engine=report.plan, seed=fresh_seed))
    assert result.candidate == "tensorrt"
    assert result.passed, render_report(result)
    verdicts = {v.block: v for v in inspect_engine(report.plan).verdicts}
    assert verdicts and verdicts["upscaling"].fused
    if precision is Precision.FP16:
        assert all(v.fused for v in verdicts.values()), verdicts
