"""The `--attention onnx` form: the plain form's attention blocks rewritten as the ONNX `Attention`
operator (opset 23), which TensorRT 10.14+ and onnxruntime 1.23+ run as one fused kernel.

The rewrite is a set of onnxscript rewriter rules (pattern API), ours: onnxscript's own fusions make
onnxruntime's contrib attention or grouped-query Attention, not this plain block. One rule per shape
the plain form traces to, at every precision:

    MatMul(q, Transpose(k)) [-> Cast to float] [-> Add mask] -> Softmax(last axis) [-> Cast] -> MatMul(., v)

becomes ``Attention(q, k', v[, mask])`` with ``scale=1`` (the plain form scales q before the product)
and ``softmax_precision=FLOAT`` (the fp32 softmax island of the low-precision forms, kept). k' is k
with the Transpose's last two axes swapped back ([B, heads, S, d]); the mask, [B, 1, 1, Sk] as
traced, is expanded to [B, 1, Sq, Sk], which onnxruntime's kernel wants spelled out.

The graph is converted to opset 23 first (onnx's version converter), since `Attention` is new there."""

from __future__ import annotations

import numpy as np
import onnx

from segdeploy.errors import BadInputError
from segdeploy.rewrites import rewrite

ATTENTION_OPSET = 23


def attention_rules() -> list:
    """The four block shapes (with or without a mask, with or without the fp32 softmax Casts), one rule each."""
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    def make_pattern(masked: bool, cast: bool):
        def block(op, q, k, v, mask):
            scores = op.MatMul(q, op.Transpose(k, _allow_other_attributes=True, _outputs=["k_t"]))
            if cast:
                scores = op.Cast(scores, to=onnx.TensorProto.FLOAT)
            if masked:
                scores = op.Add(scores, mask)
            weights = op.Softmax(scores, _allow_other_attributes=True, _outputs=["weights"])
            if cast:
                weights = op.Cast(weights, _allow_other_attributes=True)
            return op.MatMul(weights, v)

        if masked:
            return lambda op, q, k, v, mask: block(op, q, k, v, mask)
        return lambda op, q, k, v: block(op, q, k, v, None)

    def check(context, k_t, weights, **_):
        result = pattern.MatchResult()
        perm = k_t.producer().attributes.get_ints("perm", None)
        if perm is None or len(perm) != 4:
            return result.fail("the key's Transpose is not a 4-D permutation")
        if weights.producer().attributes.get_int("axis", -1) not in (-1, 3):
            return result.fail("Softmax is not over the key axis")
        return result

    def make_attention(masked: bool):
        def attention(op, q, k, v, k_t, weights, mask=None, **_):
            perm = list(k_t.producer().attributes.get_ints("perm"))
            key_perm = [perm[0], perm[1], perm[3], perm[2]]
            key = k if key_perm == [0, 1, 2, 3] else op.Transpose(k, perm=key_perm)
            inputs = [q, key, v]
            if masked:
                ones = op.initializer(ir.tensor(np.ones(2, np.int64), name=f"{weights.producer().name}/mask_ones"))
                shape = op.Concat(ones, op.Shape(q, start=2, end=3), op.Shape(key, start=2, end=3), axis=0)
                inputs.append(op.Expand(mask, shape))
            return op.Attention(*inputs, scale=1.0, softmax_precision=onnx.TensorProto.FLOAT)

        return attention

    rules = []
    for masked in (True, False):
        for cast in (True, False):
            block = make_pattern(masked, cast)
            name = f"Attention{'Masked' if masked else ''}{'Cast' if cast else ''}"
            rules.append(pattern.RewriteRule(block, make_attention(masked), check, name=name))
    return rules


def fuse_attention(model: onnx.ModelProto, opset: int = ATTENTION_OPSET) -> tuple[onnx.ModelProto, int]:
    """Convert to ``opset`` (23 or newer) and replace each attention block by one Attention node; returns the model
    and how many blocks were rewritten."""
    from onnx import version_converter
    from onnxscript.rewriter import pattern

    converted = version_converter.convert_version(model, opset)
    out, counts = rewrite(converted, {"attention": lambda: pattern.RewriteRuleSet(attention_rules())})
    if not counts["attention"]:
        raise BadInputError("no attention block matched the plain form; --attention onnx starts from the plain form")
    return out, counts["attention"]
