"""The I/O contract of an exported decoder graph: the one source of truth for names, dtypes,
dynamic dimensions, prompt labels and per-precision tolerances.

What every decoder family shares lives here (the prompt inputs, the mask outputs, the layout of a
graph and its tolerances); each family's folder assembles its own inputs and outputs from these
(``segdeploy/families/<name>/contract.py``). Export, TensorRT profiles, verify, bench and the
runners' input checks all read from here, through the layout's family.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

CONTRACT_VERSION = "1"

EMBED_DIM = 256
EMBEDDING_SIZE = 64  # image embedding grid is EMBEDDING_SIZE x EMBEDDING_SIZE
MODEL_INPUT_SIZE = 1024  # the padded, longest-side-resized frame point coordinates live in
LOW_RES_SIZE = 256  # side of low_res_masks and of mask_input
MIN_OPSET = 17  # LayerNormalization

class Label(enum.IntEnum):
    """Point labels of ``point_labels``."""

    IGNORED = -2  # a slot that fills a ragged batch; takes no part in the result
    PADDING = -1  # SAM's own padding point, appended at (0,0) when a prompt has no box
    BACKGROUND = 0
    FOREGROUND = 1
    BOX_TOP_LEFT = 2
    BOX_BOTTOM_RIGHT = 3


VALID_LABELS = frozenset(int(label) for label in Label)


class MaskOutput(str, enum.Enum):
    """Which mask tokens become outputs."""

    MULTI = "multi"  # tokens 1..3, as SAM's predictor with multimask_output=True
    SINGLE = "single"  # token 0
    ALL = "all"  # tokens 0..3
    BEST = "best"  # official signature only: one of tokens 0..3, chosen as SamOnnxModel's return_single_mask

    @property
    def tokens(self) -> tuple[int, ...]:
        """The mask tokens the graph computes."""
        return {"multi": (1, 2, 3), "single": (0,), "all": (0, 1, 2, 3), "best": (0, 1, 2, 3)}[self.value]

    @property
    def count(self) -> int:
        """M, the masks per prompt the graph returns."""
        return 1 if self is MaskOutput.BEST else len(self.tokens)


class Signature(str, enum.Enum):
    """Whose input/output signature a graph has."""

    SEGDEPLOY = "segdeploy"  # this contract: prompt batches, int64 orig_im_size
    OFFICIAL = "official"  # segment-anything's SamOnnxModel export: one prompt per call, float32 orig_im_size


class DimName(str, enum.Enum):
    """Symbolic dimensions of the graph."""

    PROMPTS = "num_prompts"
    POINTS = "num_points"
    IMAGES = "num_images"  # the multi-image flavor's image count
    MASK_HEIGHT = "mask_height"
    MASK_WIDTH = "mask_width"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, numpy dtype name, and dims (ints or symbolic names)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]
    doc: str

    def shape_text(self) -> str:
        return "[" + ",".join(str(d) for d in self.dims) + "]"


P, N = DimName.PROMPTS.value, DimName.POINTS.value

IMAGE_EMBEDDINGS = TensorSpec(
    "image_embeddings", "float32", (1, EMBED_DIM, EMBEDDING_SIZE, EMBEDDING_SIZE),
    "one image's embedding, broadcast over every prompt",
)
POINT_COORDS = TensorSpec("point_coords", "float32", (P, N, 2), "x,y in the 1024-pixel model-input frame")
POINT_LABELS = TensorSpec("point_labels", "float32", (P, N), "1 fg, 0 bg, 2/3 box corners, -1 SAM padding, -2 ignored")
MASK_INPUT = TensorSpec("mask_input", "float32", (P, 1, LOW_RES_SIZE, LOW_RES_SIZE), "previous low-res logits")
HAS_MASK_INPUT = TensorSpec("has_mask_input", "float32", (P,), "1 to use mask_input for that prompt, else 0")
ORIG_IM_SIZE = TensorSpec("orig_im_size", "int64", (2,), "original image (H, W); a shape tensor")

# The multi-image flavor: several images' embeddings, and which one each prompt reads.
IMAGE_EMBEDDINGS_MULTI = TensorSpec(
    "image_embeddings", "float32", (DimName.IMAGES.value, EMBED_DIM, EMBEDDING_SIZE, EMBEDDING_SIZE),
    "the embeddings of every image a batch of prompts refers to",
)
IMAGE_INDEX = TensorSpec("image_index", "int64", (P,), "which image (row of image_embeddings) each prompt is on")


def output_specs(mask_output: MaskOutput, postprocess: bool = True) -> list[TensorSpec]:
    m = mask_output.count
    specs = [
        TensorSpec("iou_predictions", "float32", (P, m), "predicted IoU of each mask"),
        TensorSpec("low_res_masks", "float32", (P, m, LOW_RES_SIZE, LOW_RES_SIZE), "mask logits, 256x256"),
    ]
    if postprocess:
        masks = TensorSpec(
            "masks", "float32", (P, m, DimName.MASK_HEIGHT.value, DimName.MASK_WIDTH.value),
            "mask logits at orig_im_size",
        )
        specs.insert(0, masks)
    return specs


@dataclass(frozen=True)
class GraphLayout:
    """Which inputs and outputs a graph has: the decoder family whose contract it follows, the mask
    tokens it returns, whether it resizes masks to the original size itself, whether it takes several
    images (the multi-image flavor), and whose signature it has."""

    mask_output: MaskOutput = MaskOutput.MULTI
    postprocess: bool = True
    multi_image: bool = False
    signature: Signature = Signature.SEGDEPLOY
    # A segdeploy.families.base.Family (not imported: families build on this module); its specs are
    # the graph's inputs and outputs.
    family: Family = field(kw_only=True)  # noqa: F821

    def __post_init__(self) -> None:
        if self.multi_image and self.postprocess:
            raise ValueError("the multi-image flavor has no in-graph postprocessing")
        if self.signature not in self.family.signatures:
            raise ValueError(f"the {self.signature.value} signature is not one of the {self.family.name} family's")
        official = self.signature is Signature.OFFICIAL
        if official and (self.multi_image or not self.postprocess or self.mask_output not in self.family.official_mask_outputs):
            raise ValueError(f"the official signature is single-image, postprocessed, with mask output {self.family.official_mask_outputs_text}")
        if not official and self.mask_output is MaskOutput.BEST:
            raise ValueError("mask output best belongs to the official signature")

    @property
    def official(self) -> bool:
        return self.signature is Signature.OFFICIAL

    def inputs(self) -> list[TensorSpec]:
        return self.family.input_specs(self)

    def outputs(self) -> list[TensorSpec]:
        return self.family.output_specs(self)

    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs()]

    @property
    def flavor(self) -> str:
        return "multi" if self.multi_image else "single"


@dataclass(frozen=True)
class Tolerance:
    """What verify accepts, per precision, against the fp32 eager model.

    ``low_res_masks`` pass when their max abs error <= ``logit_abs``. The full-size ``masks`` also
    pass when max abs error / max |reference| <= ``resized_logit_rel``: backends compute the bilinear
    source coordinates of the crop-and-resize slightly differently, which moves steep logits by about
    1e-3. Binarised masks (logit > 0) must reach the worst and mean IoU given; IoU predictions must
    be within ``iou_pred_abs``.
    """

    logit_abs: float
    resized_logit_rel: float
    iou_pred_abs: float
    mask_iou_worst: float
    mask_iou_mean: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(logit_abs=1e-3, resized_logit_rel=1e-4, iou_pred_abs=1e-4, mask_iou_worst=0.99, mask_iou_mean=0.999),
    # fp16 measured here (ORT CPU, 8 seeds of the matrix): logits <= 0.073 abs, IoU pred <= 2.1e-4,
    # worst mask IoU >= 0.9876; thresholds leave ~3x headroom on the errors.
    "fp16": Tolerance(logit_abs=0.25, resized_logit_rel=5e-3, iou_pred_abs=2e-3, mask_iou_worst=0.98, mask_iou_mean=0.995),
    # TF32 matrix work (TensorRT fp32 engines built with TF32 on) keeps fp16's 10 mantissa bits.
    "tf32": Tolerance(logit_abs=0.25, resized_logit_rel=5e-3, iou_pred_abs=2e-3, mask_iou_worst=0.98, mask_iou_mean=0.995),
    # bf16 keeps 8 mantissa bits to fp16's 11: thresholds scaled from fp16 by 8 (see README).
    "bf16": Tolerance(logit_abs=2.0, resized_logit_rel=4e-2, iou_pred_abs=1.6e-2, mask_iou_worst=0.95, mask_iou_mean=0.98),
}

# Names of graph metadata keys (ONNX metadata_props).
META_PREFIX = "segdeploy."
META_KEYS = (
    "version", "contract_version", "variant", "weights", "weights_sha256", "random_seed",
    "opset", "mask_output", "postprocess", "precision", "attention", "upscale", "target", "images", "signature",
    "family",  # absent: the registry's default family (graphs written before families existed)
)
