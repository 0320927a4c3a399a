"""The SAM 1 family's I/O contract (contract v1): the shared prompt inputs after one image embedding,
and segment-anything's own export signature (``SamOnnxModel``: one prompt per call, float32 sizes).
Imports nothing heavy."""

from __future__ import annotations

from segdeploy import contract
from segdeploy.contract import GraphLayout, MaskOutput, TensorSpec

# Released SAM variants; all share one decoder shape, the name goes into metadata.
VARIANT_NAMES = ("sam_vit_b", "sam_vit_l", "sam_vit_h", "mobile_sam")
DEFAULT_VARIANT = "sam_vit_b"
IMAGE_INPUTS = (contract.IMAGE_EMBEDDINGS.name,)
N = contract.DimName.POINTS.value


def input_specs(layout: GraphLayout) -> list[TensorSpec]:
    if layout.official:
        return list(OFFICIAL_INPUTS)
    if layout.multi_image:  # no in-graph postprocessing: original sizes differ per image
        return [contract.IMAGE_EMBEDDINGS_MULTI, contract.IMAGE_INDEX, *PROMPT_INPUTS]
    specs = [contract.IMAGE_EMBEDDINGS, *PROMPT_INPUTS]
    return specs + [contract.ORIG_IM_SIZE] if layout.postprocess else specs


def output_specs(layout: GraphLayout) -> list[TensorSpec]:
    if layout.official:
        return official_output_specs(layout.mask_output)
    return contract.output_specs(layout.mask_output, layout.postprocess)


PROMPT_INPUTS = (contract.POINT_COORDS, contract.POINT_LABELS, contract.MASK_INPUT, contract.HAS_MASK_INPUT)

# segment-anything's official export (SamOnnxModel): the same names, one prompt per call, float sizes.
OFFICIAL_INPUTS = (
    contract.IMAGE_EMBEDDINGS,
    TensorSpec("point_coords", "float32", (1, N, 2), contract.POINT_COORDS.doc),
    TensorSpec("point_labels", "float32", (1, N), "1 fg, 0 bg, 2/3 box corners, -1 SAM padding"),
    TensorSpec("mask_input", "float32", (1, 1, contract.LOW_RES_SIZE, contract.LOW_RES_SIZE), contract.MASK_INPUT.doc),
    TensorSpec("has_mask_input", "float32", (1,), contract.HAS_MASK_INPUT.doc),
    TensorSpec("orig_im_size", "float32", (2,), "original image (H, W) as floats"),
)


def official_output_specs(mask_output: MaskOutput) -> list[TensorSpec]:
    return [TensorSpec(s.name, s.dtype, (1, *s.dims[1:]), s.doc) for s in contract.output_specs(mask_output, postprocess=True)]


def official_layout_from_io(family, input_names: list[str], outputs) -> GraphLayout:
    """The layout of a graph with the official export's signature (float32 ``orig_im_size``)."""
    from segdeploy.errors import BadInputError

    if tuple(input_names) != tuple(s.name for s in OFFICIAL_INPUTS):
        raise BadInputError(f"inputs {input_names} are neither segdeploy's contract nor the official export's signature")
    dims = outputs.get("iou_predictions", [])
    counts = {1: MaskOutput.BEST, 4: MaskOutput.ALL}
    if len(dims) != 2 or dims[1] not in counts:
        raise BadInputError(f"cannot tell the masks per prompt from iou_predictions dims {dims}")
    return family.layout(counts[dims[1]], postprocess=True, signature=contract.Signature.OFFICIAL)
