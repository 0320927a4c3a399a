"""The onnxruntime form's rewrite rules (segdeploy.rewrites): each fires on our traced graph, the
rewritten graph computes what the traced one does, and the exported graph still verifies."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from segdeploy.bench import bench_feeds
from segdeploy.export import ExportOptions, export_onnx, trace_to_onnx
from segdeploy.forms import Target
from segdeploy.graph_passes import optimize_graph
from segdeploy.registry import family_of_variant, load_decoder
from segdeploy.rewrites import CONTRIB_DOMAIN, ERF_GELU, GEMM_BIAS_GELU, MEASURED_SLOWER, RULES, SKIP_LAYER_NORM, apply_rules
from segdeploy.verify import VerifyOptions, render_report, verify_graph

VARIANTS = ["sam_vit_b", "sam2.1_hiera_tiny"]


def traced(variant: str, **fields) -> onnx.ModelProto:
    """The graph as export has it after its clean-up passes, before any rewrite (``fields``: other
    ExportOptions; none: the onnxruntime fp32 graph just before the rewrite rules)."""
    options = ExportOptions(variant=variant, **fields)
    decoder, _ = load_decoder(variant, None, 0)
    module = options.family.decoder_graph(decoder, options.layout, options.form).eval()
    return optimize_graph(trace_to_onnx(module, options))


def run(model: onnx.ModelProto, feeds) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.fixture(scope="module", params=VARIANTS)
def graph(request):
    return request.param, traced(request.param)


def feeds_for(variant: str, prompts: int = 2):
    return bench_feeds(prompts, 3, (600, 900), np.random.default_rng(0), postprocess=True, family=family_of_variant(variant))


# how often each rule fires per family: SAM 2 adds its high-resolution features between the upscaling
# GEMMs and their GELUs, so no Gemm feeds a GELU directly there
FIRES = {
    "sam_vit_b": {"erf_gelu": 4, "gemm_bias_gelu": 1, "skip_layer_norm": 8},
    "sam2.1_hiera_tiny": {"erf_gelu": 4, "gemm_bias_gelu": 0, "skip_layer_norm": 8},
}


@pytest.mark.parametrize("rule", [ERF_GELU, GEMM_BIAS_GELU, SKIP_LAYER_NORM], ids=lambda r: r.name)
def test_rule_fires_and_keeps_the_function(graph, rule):
    variant, model = graph
    expected = FIRES[variant][rule.name]
    rules = (ERF_GELU, rule) if rule is GEMM_BIAS_GELU else (rule,)  # BiasGelu matches the fused Gelu
    rewritten, counts = apply_rules(model, rules)
    assert counts[rule.name] == expected, counts
    onnx.checker.check_model(rewritten)
    assert any(n.domain == CONTRIB_DOMAIN for n in rewritten.graph.node)
    if rule is GEMM_BIAS_GELU and variant == "sam2.1_hiera_tiny":
        assert not any(n.op_type == "BiasGelu" for n in rewritten.graph.node)
    feeds = feeds_for(variant)
    for ours, reference in zip(run(rewritten, feeds), run(model, feeds)):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


def test_kept_and_measured_rules_are_listed():
    assert [r.name for r in RULES] == ["erf_gelu", "gemm_bias_gelu"]
    assert [r.name for r in MEASURED_SLOWER] == ["skip_layer_norm"]
    assert {r.source for r in RULES + MEASURED_SLOWER} == {"onnxscript", "segdeploy"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnxruntime_export_is_rewritten_and_verifies(variant, tmp_path, fresh_seed):
    report = export_onnx(ExportOptions(variant=variant, out=tmp_path / "g.onnx"))
    fires = FIRES[variant]
    assert report.op_counts.get("BiasGelu", 0) == fires["gemm_bias_gelu"] and "Erf" not in report.op_counts
    assert report.op_counts.get("Gelu") == fires["erf_gelu"] - fires["gemm_bias_gelu"]
    result = verify_graph(VerifyOptions(onnx=report.path, cases=4, seed=fresh_seed))
    assert result.passed, render_report(result)


def test_tensorrt_export_keeps_standard_ops(tmp_path):
    report = export_onnx(ExportOptions(target=Target.TENSORRT, out=tmp_path / "t.onnx"))
    model = onnx.load(str(report.path))
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert "BiasGelu" not in report.op_counts and "Erf" in report.op_counts


@pytest.mark.parametrize("variant", ["hq_vit_tiny", "sam_vit_b"])
def test_the_cut_rule_list_optimizes_as_onnxscripts_whole_default_list(variant):
    """graph_passes.onnxscript_optimize runs 4 of onnxscript's 46 default rewrite rules: on a traced
    graph its output equals onnxscript.optimizer.optimize's byte for byte (HQ-SAM's: the 35 graphs of
    the identity manifest, SAM 1's and SAM 2's, were made by optimize). Fault: drop a rule from
    MATCHING_RULES (unsqueeze_unsqueeze_rule fires on both) and this fails."""
    import onnxscript.optimizer

    from segdeploy.graph_passes import onnxscript_optimize

    options = ExportOptions(variant=variant)
    decoder, _ = load_decoder(variant, None, 0)
    module = options.family.decoder_graph(decoder, options.layout, options.form).eval()
    model = trace_to_onnx(module, options)
    ours, theirs = onnx.ModelProto(), onnx.ModelProto()
    ours.CopyFrom(model)
    theirs.CopyFrom(model)
    assert onnxscript_optimize(ours).SerializeToString() == onnxscript.optimizer.optimize(theirs).SerializeToString()
