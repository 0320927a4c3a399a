"""The SAM 2 family's I/O contract: SAM 1's prompt inputs, plus the image encoder's two projected
high-resolution feature maps, and an object-score output. Imports nothing heavy.

Per-image inputs are what ``SAM2ImagePredictor.set_image`` keeps in ``_features``: ``image_embed``
(the lowest-resolution map with ``no_mem_embed`` added) and ``high_res_feats`` (the two finer maps,
already projected by the mask decoder's ``conv_s0``/``conv_s1`` in ``SAM2Base.forward_image``).
"""

from __future__ import annotations

from segdeploy import contract
from segdeploy.contract import DimName, GraphLayout, TensorSpec

FAMILY = "sam2"
# Official checkpoints sam2_hiera_{tiny,small,base_plus,large}.pt and sam2.1_hiera_*.pt: the image
# encoders differ, the prompt encoder and mask decoder have one shape (configs: high-res features,
# sigmoid IoU head, object-score MLP, multimask token for the object pointer, in 2 and 2.1 alike).
VARIANT_NAMES = tuple(
    f"{release}_hiera_{size}" for release in ("sam2", "sam2.1") for size in ("tiny", "small", "base_plus", "large")
)
DEFAULT_VARIANT = "sam2.1_hiera_large"

EMBED_DIM = contract.EMBED_DIM
HIGH_RES_CHANNELS = (EMBED_DIM // 8, EMBED_DIM // 4)  # conv_s0 -> 32 channels at 256x256, conv_s1 -> 64 at 128x128
HIGH_RES_SIZES = (4 * contract.EMBEDDING_SIZE, 2 * contract.EMBEDDING_SIZE)
# SAM2ImagePredictor's single-mask choice (build_sam2's apply_postprocessing): token 0 unless its
# stability score (IoU of logits > delta and > -delta) is below thresh, then the best of tokens 1..3.
STABILITY_DELTA = 0.05
STABILITY_THRESH = 0.98
LOW_RES_CLAMP = 32.0  # SAM2ImagePredictor clamps the low-res logits it returns (not the masks it resizes)

P, N, IMAGES = DimName.PROMPTS.value, DimName.POINTS.value, DimName.IMAGES.value


def _high_res(level: int, images: int | str) -> TensorSpec:
    side = HIGH_RES_SIZES[level]
    conv = "conv_s0" if level == 0 else "conv_s1"
    return TensorSpec(
        f"high_res_feats_{level}", "float32", (images, HIGH_RES_CHANNELS[level], side, side),
        f"the image encoder's stride-{16 // 2 ** (2 - level)} feature map after the mask decoder's {conv} (SAM2ImagePredictor._features['high_res_feats'][{level}])",
    )


HIGH_RES_FEATS_0, HIGH_RES_FEATS_1 = _high_res(0, 1), _high_res(1, 1)
HIGH_RES_FEATS_0_MULTI, HIGH_RES_FEATS_1_MULTI = _high_res(0, IMAGES), _high_res(1, IMAGES)
IMAGE_INPUTS = (contract.IMAGE_EMBEDDINGS.name, HIGH_RES_FEATS_0.name, HIGH_RES_FEATS_1.name)

POINT_COORDS = TensorSpec(
    "point_coords", "float32", (P, N, 2), "x,y in the 1024x1024 model-input square (x*1024/W, y*1024/H; no padding)",
)
OBJECT_SCORE_LOGITS = TensorSpec("object_score_logits", "float32", (P, 1), "logit that the object is in the image")


def input_specs(layout: GraphLayout) -> list[TensorSpec]:
    prompts = [POINT_COORDS, contract.POINT_LABELS, contract.MASK_INPUT, contract.HAS_MASK_INPUT]
    if layout.multi_image:
        return [contract.IMAGE_EMBEDDINGS_MULTI, HIGH_RES_FEATS_0_MULTI, HIGH_RES_FEATS_1_MULTI, contract.IMAGE_INDEX, *prompts]
    specs = [contract.IMAGE_EMBEDDINGS, HIGH_RES_FEATS_0, HIGH_RES_FEATS_1, *prompts]
    return specs + [contract.ORIG_IM_SIZE] if layout.postprocess else specs


def output_specs(layout: GraphLayout) -> list[TensorSpec]:
    specs = contract.output_specs(layout.mask_output, layout.postprocess)
    if layout.postprocess:
        specs[0] = TensorSpec(specs[0].name, specs[0].dtype, specs[0].dims, "mask logits resized straight to orig_im_size")
    return specs + [OBJECT_SCORE_LOGITS]
