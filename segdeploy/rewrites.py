"""Graph rewrites of the onnxruntime form, written as onnxscript rewriter rules (pattern API).

Each rule maps a subgraph to onnxruntime contrib operators (domain ``com.microsoft``) that do the
same arithmetic in fewer passes over the big maps. Only the ``--target onnxruntime`` fp32 graph gets
them: TensorRT parses standard ONNX only, and the low-precision forms keep their LayerNorms and GELUs
between Casts (fp32 islands), which these patterns do not cross.

Rules, and where they come from (README, "Graph forms"):
- ``erf_gelu`` (onnxscript ``ort_fusions.erfgelu``, both operand orders): the exported
  x * (erf(x / sqrt 2) + 1) * 0.5 chain -> one ``com.microsoft`` Gelu (exact erf GELU, same function);
- ``gemm_bias_gelu`` (ours): Gelu(Gemm(x, W, b)) -> BiasGelu(MatMul(x, W^T), b): the bias rides in the
  GELU pass instead of its own broadcast pass over the GEMM's output (the upscaling path's 2nd stage);
- ``skip_layer_norm`` (onnxscript ``ort_fusions.skip_normalization``, measured, not applied: see
  MEASURED_SLOWER): LayerNormalization(a + b) -> SkipLayerNormalization(a, b), the residual add and
  the norm in one pass over the 4096x256 image maps.
  The library checks that both summands are [B, S, D] with the same symbols, which onnx's shape
  inference loses behind the traced Reshapes; onnxruntime's symbolic shape inference keeps them, so
  it runs first for this rule and its annotations are dropped after (export re-infers shapes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

CONTRIB_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class Rule:
    name: str
    source: str  # "onnxscript" or "segdeploy"
    what: str
    build: Callable[[], object]  # -> onnxscript RewriteRuleSet
    symbolic_shapes: bool = False  # its check needs dims kept equal across Reshapes (symbolic shape inference)


def _erf_gelu_rules():
    from onnxscript.rewriter import pattern
    from onnxscript.rewriter.ort_fusions import erfgelu

    return pattern.RewriteRuleSet([variant for rule in erfgelu.rules.rules for variant in rule.commute()])


def _gemm_bias_gelu_rules():
    from onnxscript.rewriter import pattern

    def gemm_gelu(op, x, weight, bias):
        return op.Gelu(op.Gemm(x, weight, bias, _allow_other_attributes=True, _outputs=["gemm"]), _domain=CONTRIB_DOMAIN)

    def check(context, x, weight, bias, gemm, **_):
        result = pattern.MatchResult()
        attributes = gemm.producer().attributes
        if attributes.get_int("transA", 0) != 0:
            return result.fail("Gemm with transA")
        if attributes.get_float("alpha", 1.0) != 1.0 or attributes.get_float("beta", 1.0) != 1.0:
            return result.fail("Gemm with alpha or beta other than 1")
        if bias.shape is None or len(bias.shape) != 1 or weight.const_value is None:
            return result.fail("bias not 1-D or weight not a constant")
        return result

    def bias_gelu(op, x, weight, bias, gemm, **_):
        transposed = gemm.producer().attributes.get_int("transB", 0)
        rhs = op.Transpose(weight, perm=[1, 0]) if transposed else weight
        return op.BiasGelu(op.MatMul(x, rhs), bias, _domain=CONTRIB_DOMAIN)

    return pattern.RewriteRuleSet([pattern.RewriteRule(gemm_gelu, bias_gelu, check, name="GemmBiasGelu")])


def _skip_layer_norm_rules():
    from onnxscript.rewriter.ort_fusions import skip_normalization

    return skip_normalization.skip_layer_normalization_ruleset


ERF_GELU = Rule("erf_gelu", "onnxscript", "Div/Erf/Add/Mul/Mul GELU -> com.microsoft Gelu", _erf_gelu_rules)
GEMM_BIAS_GELU = Rule("gemm_bias_gelu", "segdeploy", "Gelu(Gemm(x, W, b)) -> BiasGelu(MatMul(x, W^T), b)", _gemm_bias_gelu_rules)
SKIP_LAYER_NORM = Rule("skip_layer_norm", "onnxscript", "LayerNormalization(a + b) -> SkipLayerNormalization(a, b)", _skip_layer_norm_rules, True)

# What export applies to the onnxruntime fp32 form: each kept because it paid in an interleaved A/B
# on this project's 2-core machine (benchmarks/floor_gap.py ab; numbers in README "Graph forms").
RULES: tuple[Rule, ...] = (ERF_GELU, GEMM_BIAS_GELU)
# Stated and tested, not applied: onnxruntime's CPU SkipLayerNormalization kernel ran the 4096x256
# residual+norm slower than its Add + LayerNormalization (whole graph 1.13-1.20x slower, B=1).
MEASURED_SLOWER: tuple[Rule, ...] = (SKIP_LAYER_NORM,)


def symbolic_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model annotated by onnxruntime's symbolic shape inference (keeps dims equal across Reshapes)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    return SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)


def rewrite(model: onnx.ModelProto, rule_sets: dict[str, Callable[[], object]]) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Apply each named rule set (built by its callable: an onnxscript RewriteRuleSet) in order to
    ``model``'s IR; returns the rewritten model (unused nodes removed, no intermediate value_info)
    and how often each set fired."""
    import onnx_ir as ir
    import onnxscript.optimizer

    ir_model = ir.serde.deserialize_model(model)
    counts = {name: build().apply_to_model(ir_model) for name, build in rule_sets.items()}
    onnxscript.optimizer.remove_unused_nodes(ir_model)
    out = ir.serde.serialize_model(ir_model)
    del out.graph.value_info[:]
    return out, counts


def apply_rules(model: onnx.ModelProto, rules: tuple[Rule, ...] = RULES) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Apply ``rules`` in order; returns the rewritten model (no intermediate value_info) and how often each fired."""
    # onnxruntime's symbolic inference knows only its own Attention (not ONNX's opset-23 one): rules
    # that need it run on graphs without that operator
    annotated = symbolic_shapes(model) if any(rule.symbolic_shapes for rule in rules) else model
    out, counts = rewrite(annotated, {rule.name: rule.build for rule in rules})
    if any(counts.values()) and not any(o.domain == CONTRIB_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1))
    return out, counts
