"""The interface a decoder family implements: what export, verify, bench, the TensorRT profiles and
the runtime ask of a family without knowing which one it is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segdeploy.contract import GraphLayout, MaskOutput, Signature
from segdeploy.errors import BadInputError

if TYPE_CHECKING:
    import numpy as np

    from segdeploy.cases import Case
    from segdeploy.contract import TensorSpec
    from segdeploy.forms import GraphForm
    from segdeploy.prompts import PromptRules
    from segdeploy.weights import WeightsInfo

MASKS_PER_PROMPT = {1: MaskOutput.SINGLE, 3: MaskOutput.MULTI, 4: MaskOutput.ALL}


class Family(ABC):
    """One decoder family. Methods import their heavy dependencies themselves."""

    name: str
    title: str  # how users call it ("SAM 2")
    variant_names: tuple[str, ...]
    default_variant: str
    # Inputs with one row per image (the multi-image flavor indexes them with image_index).
    image_inputs: tuple[str, ...]
    # The signatures its graphs can have: this contract's, and the reference implementation's own export.
    signatures: tuple[Signature, ...] = (Signature.SEGDEPLOY,)
    # With the official signature: the mask outputs its official export offers, and how to say so.
    official_mask_outputs: tuple[MaskOutput, ...] = ()
    official_mask_outputs_text: str = ""
    # Key prefixes of its official checkpoints (what tells a checkpoint's family).
    checkpoint_prefixes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<{self.title} decoder family {self.name!r}>"

    def layout(
        self, mask_output: MaskOutput = MaskOutput.MULTI, postprocess: bool = True, multi_image: bool = False,
        signature: Signature = Signature.SEGDEPLOY,
    ) -> GraphLayout:
        """A graph layout of this family."""
        return GraphLayout(mask_output, postprocess, multi_image, signature, family=self)

    @abstractmethod
    def input_specs(self, layout: GraphLayout) -> list[TensorSpec]:
        """The graph inputs of ``layout``, in order."""

    @abstractmethod
    def output_specs(self, layout: GraphLayout) -> list[TensorSpec]:
        """The graph outputs of ``layout``, in order."""

    def image_specs(self) -> list[TensorSpec]:
        """The per-image inputs of one image (single-image flavor), in input order."""
        return [spec for spec in self.layout().inputs() if spec.name in self.image_inputs]

    def layout_from_io(self, input_names: list[str], outputs: Mapping[str, list], input_dtypes: Mapping[str, str]) -> GraphLayout:
        """The layout whose declared inputs are ``input_names`` (a graph without metadata, an engine, a
        package): the flavor from the inputs, masks per prompt from ``iou_predictions``."""
        dims = outputs.get("iou_predictions", [])
        if len(dims) != 2 or dims[1] not in MASKS_PER_PROMPT:
            raise BadInputError(f"cannot tell the masks per prompt from iou_predictions dims {dims}")
        for postprocess, multi_image in ((True, False), (False, False), (False, True)):
            layout = self.layout(MASKS_PER_PROMPT[dims[1]], postprocess, multi_image)
            if [s.name for s in layout.inputs()] == list(input_names):
                return layout
        raise BadInputError(f"inputs {input_names} are {self.unknown_inputs_text}")

    unknown_inputs_text = "not a graph of this family's"  # how layout_from_io names inputs it does not know

    # Export-time choices of the family's graphs (`segdeploy export --family-option NAME=VALUE`),
    # recorded in graph metadata under their names.
    export_options: tuple[str, ...] = ()

    def bind(self, metadata: Mapping[str, str]) -> Family:
        """This family for one variant and its export-time choices (``metadata``: a graph's, or
        ``variant`` and the export options): a family whose inputs or graphs depend on them returns
        an object that holds them; the others, itself."""
        return self

    def bound_metadata(self) -> dict[str, str]:
        """The graph metadata of the export-time choices this object holds."""
        return {}

    def owns_checkpoint(self, keys: list[str]) -> bool:
        """Whether a checkpoint with these keys is in this family's official layout."""
        return any(key.startswith(self.checkpoint_prefixes) for key in keys)

    @abstractmethod
    def load_decoder(self, variant: str, checkpoint: Path | None, seed: int) -> tuple[Any, WeightsInfo]:
        """The eager decoder from a checkpoint (any key layout the family knows) or seeded random
        weights; a checkpoint with none of its keys raises ``weights.CheckpointLayoutError``."""

    @abstractmethod
    def decoder_graph(self, decoder: Any, layout: GraphLayout, form: GraphForm) -> Any:
        """The torch module whose inputs and outputs are ``layout``'s: what export traces and the
        eager reference runs."""

    @abstractmethod
    def compiled_graph(self, decoder: Any, layout: GraphLayout, form: GraphForm) -> Any:
        """``decoder_graph`` as AOTInductor compiles it: the same function, with the in-graph
        postprocessing's data-dependent sizes (from ``orig_im_size``) written to compile."""

    @abstractmethod
    def example_inputs(self, layout: GraphLayout) -> tuple:
        """Torch tensors to trace with (values do not matter; dynamic dims must not be 1)."""

    @abstractmethod
    def draw_cases(self, rng: np.random.Generator, count: int | None, layout: GraphLayout) -> list[Case]:
        """The verify matrix of this family and flavor, drawn fresh from ``rng``."""

    @abstractmethod
    def image_feeds(self, rng: np.random.Generator, images: int) -> dict[str, np.ndarray]:
        """Random per-image inputs (embeddings and any feature maps) for ``images`` images."""

    # --- the runtime's pre- and postprocessing (segdeploy.Decoder) ---
    low_res_clamp: float | None = None  # the predictor clamps the low-res logits it returns to +-this

    @abstractmethod
    def prompt_rules(self) -> PromptRules:
        """Coordinate frame, box order and padding of the family's predictor."""

    @abstractmethod
    def check_images(self, value: Any, where: str = "") -> dict[str, np.ndarray]:
        """One image's inputs (what the user passes as a prompt's ``embedding``, or a mapping by
        input name) as float32 arrays by input name, without the leading image dimension;
        BadInputError otherwise."""

    @abstractmethod
    def upscale_on_host(self, low_res: np.ndarray, orig_size: tuple[int, int]) -> np.ndarray:
        """Low-res logits [B,M,256,256] to the original size, as the family's predictor does."""

    @abstractmethod
    def single_column(self, low_res: np.ndarray, iou: np.ndarray) -> int:
        """The predictor's single mask (multimask_output=False) among tokens 0..3 of one prompt."""

    def multimask_column(self, low_res: np.ndarray, iou: np.ndarray) -> int | None:
        """For a predictor that returns one mask with multimask_output=True: which of tokens 1..3
        (low_res [3,h,w], iou [3]) it is; None: it returns all three."""
        return None

    def official_images(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One prompt's feeds with the per-image inputs as the official export's signature takes them
        (``feeds`` in this contract's form otherwise)."""
        return feeds

    # --- bench's baseline: the reference implementation's own export ---
    def export_baseline(self, decoder: Any, path: Path) -> Path:
        """Export the reference implementation's own modules with ``decoder``'s weights to ``path``."""
        raise BadInputError(f"the {self.name} family has no official baseline")

    def baseline_layout(self) -> GraphLayout:
        """The layout of the graph ``export_baseline`` writes (run under this family's contract feeds)."""
        raise BadInputError(f"the {self.name} family has no official baseline")
