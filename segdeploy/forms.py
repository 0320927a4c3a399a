"""Graph forms: how the same decoder function is written into ONNX. Every form honours the one
I/O contract and passes verify; they differ in speed per backend and in what TensorRT fuses."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AttentionForm(str, enum.Enum):
    PLAIN = "plain"  # [B,heads,S,d], scale on q, MatMul -> Softmax -> MatMul: TensorRT's fusable MHA
    FEWTOKEN = "fewtoken"  # cross-attention projections folded onto the token side (fewer FLOPs while T < 16)
    ONNX = "onnx"  # the plain form with each block as the ONNX Attention operator (opset 23)


class UpscaleForm(str, enum.Enum):
    CONVTRANSPOSE = "convtranspose"  # NCHW ConvTranspose 2x2/2 twice, as SAM writes it
    MATMUL = "matmul"  # channels-last MatMuls with the pixel shuffle deferred to one Transpose of the masks


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class Target(str, enum.Enum):
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class GraphForm:
    attention: AttentionForm = AttentionForm.PLAIN
    upscale: UpscaleForm = UpscaleForm.CONVTRANSPOSE
    precision: Precision = Precision.FP32

    def describe(self) -> str:
        return f"attention={self.attention.value}, upscale={self.upscale.value}, precision={self.precision.value}"


# Cross-attention head size of SAM's decoder (128 internal channels / 8 heads). The few-token form
# does fewer FLOPs than the plain one while a prompt has fewer tokens (5 output tokens + N points).
FEWTOKEN_BREAK_EVEN_TOKENS = 16

# Default form per target: chosen from benchmarks/ measurements (README), every one verified in tests.
DEFAULT_FORMS: dict[Target, tuple[AttentionForm, UpscaleForm]] = {
    Target.ONNXRUNTIME: (AttentionForm.FEWTOKEN, UpscaleForm.MATMUL),
    Target.TENSORRT: (AttentionForm.PLAIN, UpscaleForm.CONVTRANSPOSE),
}

# ONNX ConvTranspose (like Conv) takes bfloat16 from opset 22 on; the tracer writes opsets up to 20,
# so a bf16 graph upscales with the MatMul form (the same function) unless written at opset 23.
CONVTRANSPOSE_BF16_OPSET = 22


def upscale_unsupported(upscale: UpscaleForm, precision: Precision, opset: int) -> str:
    """Why ``upscale`` cannot be written at ``precision`` and ``opset``; empty when it can."""
    if upscale is UpscaleForm.CONVTRANSPOSE and precision is Precision.BF16 and opset < CONVTRANSPOSE_BF16_OPSET:
        return f"ONNX ConvTranspose takes bfloat16 only from opset {CONVTRANSPOSE_BF16_OPSET} (this export: opset {opset})"
    return ""


def default_upscale(target: Target, precision: Precision, opset: int) -> UpscaleForm:
    """The target's upscaling form, or the MatMul form where the target's cannot be typed at ``precision``."""
    upscale = DEFAULT_FORMS[target][1]
    return UpscaleForm.MATMUL if upscale_unsupported(upscale, precision, opset) else upscale
