"""The HQ-SAM family's I/O contract: SAM's prompt inputs and outputs, plus the image encoder's early
ViT feature map ``interm_embeddings`` beside ``image_embeddings``. Imports nothing heavy.

``interm_embeddings`` is ``SamPredictor.interm_features[0]`` of segment_anything_hq: the output of
the ViT's first global-attention block, channels last [1,64,64,C]. C is the ViT's width, so it is
fixed by the variant (and by the weights of ``compress_vit_feat``): the family object bound to a
variant (a graph's metadata names it) declares it as a number; unbound (an engine or package read
without a variant), the dim is the symbolic ``vit_channels``.

Outputs are SAM's names and shapes. Column k of ``masks``/``low_res_masks`` is what HQ-SAM returns
when its selection keeps SAM's mask token k: that token's logits plus the HQ token's (the HQ token's
alone with ``hq_token_only``); ``iou_predictions`` column k is token k's score. So ``--mask-output
single`` (token 0) is the predictor's ``multimask_output=False``; ``multi`` (tokens 1..3) holds the
three candidates of ``multimask_output=True``, of which the predictor keeps the best-scored one;
``all`` holds tokens 0..3.
"""

from __future__ import annotations

from segdeploy import contract
from segdeploy.contract import DimName, GraphLayout, MaskOutput, TensorSpec

FAMILY = "hq"
# segment_anything_hq's builders: ViT-B/L/H (encoder widths 768/1024/1280) and Light HQ-SAM (TinyViT, 160).
VIT_CHANNELS = {"hq_vit_b": 768, "hq_vit_l": 1024, "hq_vit_h": 1280, "hq_vit_tiny": 160}
VARIANT_NAMES = tuple(VIT_CHANNELS)
DEFAULT_VARIANT = "hq_vit_b"
VIT_CHANNELS_DIM = "vit_channels"  # the symbolic C of a family object bound to no variant
# The official export (segment_anything_hq.utils.onnx, scripts/export_onnx_model.py) stacks the
# four global blocks' outputs; only [0] is read.
OFFICIAL_INTERM_BLOCKS = 4
HQ_TOKEN_ONLY = "hq_token_only"  # the graph-metadata key of the export-time choice

P, N, IMAGES = DimName.PROMPTS.value, DimName.POINTS.value, DimName.IMAGES.value
SIDE = contract.EMBEDDING_SIZE
INTERM_DOC = "the ViT's first global-attention block output, channels last (SamPredictor.interm_features[0])"


def interm_spec(channels: int | str, images: int | str = 1) -> TensorSpec:
    return TensorSpec("interm_embeddings", "float32", (images, SIDE, SIDE, channels), INTERM_DOC)


IMAGE_INPUTS = (contract.IMAGE_EMBEDDINGS.name, "interm_embeddings")
PROMPT_INPUTS = (contract.POINT_COORDS, contract.POINT_LABELS, contract.MASK_INPUT, contract.HAS_MASK_INPUT)


def input_specs(layout: GraphLayout, channels: int | str) -> list[TensorSpec]:
    if layout.official:
        return official_input_specs(channels)
    if layout.multi_image:
        return [contract.IMAGE_EMBEDDINGS_MULTI, interm_spec(channels, IMAGES), contract.IMAGE_INDEX, *PROMPT_INPUTS]
    specs = [contract.IMAGE_EMBEDDINGS, interm_spec(channels), *PROMPT_INPUTS]
    return specs + [contract.ORIG_IM_SIZE] if layout.postprocess else specs


def output_specs(layout: GraphLayout) -> list[TensorSpec]:
    if layout.official:
        return [TensorSpec(s.name, s.dtype, (1, *s.dims[1:]), s.doc) for s in contract.output_specs(MaskOutput.BEST, postprocess=True)]
    specs = contract.output_specs(layout.mask_output, layout.postprocess)
    return [TensorSpec(s.name, s.dtype, s.dims, s.doc + " (SAM token + HQ token)") if "masks" in s.name else s for s in specs]


# segment_anything_hq's official export (SamOnnxModel): one prompt per call, float sizes, all four
# global blocks' outputs stacked, one mask out (the selection fixed at export).
def official_input_specs(channels: int | str) -> list[TensorSpec]:
    return [
        contract.IMAGE_EMBEDDINGS,
        TensorSpec("interm_embeddings", "float32", (OFFICIAL_INTERM_BLOCKS, 1, SIDE, SIDE, channels), "the four global blocks' outputs (only [0] is read)"),
        TensorSpec("point_coords", "float32", (1, N, 2), contract.POINT_COORDS.doc),
        TensorSpec("point_labels", "float32", (1, N), "1 fg, 0 bg, 2/3 box corners, -1 SAM padding"),
        TensorSpec("mask_input", "float32", (1, 1, contract.LOW_RES_SIZE, contract.LOW_RES_SIZE), contract.MASK_INPUT.doc),
        TensorSpec("has_mask_input", "float32", (1,), contract.HAS_MASK_INPUT.doc),
        TensorSpec("orig_im_size", "float32", (2,), "original image (H, W) as floats"),
    ]
