"""The interface a decoder family implements: what export, verify, bench, the TensorRT profiles and
the runtime ask of "SAM 1" or "SAM 2" without knowing which one it is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from segdeploy.cases import Case
    from segdeploy.contract import GraphLayout, TensorSpec
    from segdeploy.forms import GraphForm
    from segdeploy.weights import WeightsInfo


class Family(ABC):
    """One decoder family. Methods import their heavy dependencies themselves."""

    name: str
    variant_names: tuple[str, ...]
    default_variant: str
    # Inputs with one row per image (the multi-image flavor indexes them with image_index).
    image_inputs: tuple[str, ...] = ("image_embeddings",)

    @abstractmethod
    def input_specs(self, layout: GraphLayout) -> list[TensorSpec]:
        """The graph inputs of ``layout``, in order."""

    @abstractmethod
    def output_specs(self, layout: GraphLayout) -> list[TensorSpec]:
        """The graph outputs of ``layout``, in order."""

    @abstractmethod
    def load_decoder(self, variant: str, checkpoint: Path | None, seed: int) -> tuple[Any, WeightsInfo]:
        """The eager decoder from a checkpoint (any key layout the family knows) or seeded random weights."""

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
    def prompt_rules(self) -> Any:
        """A ``segdeploy.runtime.prompts.PromptRules``: coordinate frame, box order, padding."""

    @abstractmethod
    def check_images(self, value: Any, where: str = "") -> dict[str, np.ndarray]:
        """One image's inputs (what the user passes as a prompt's ``embedding``) as float32 arrays by
        input name, without the leading image dimension; BadInputError otherwise."""

    @abstractmethod
    def upscale_on_host(self, low_res: np.ndarray, orig_size: tuple[int, int]) -> np.ndarray:
        """Low-res logits [B,M,256,256] to the original size, as the family's predictor does."""

    @abstractmethod
    def single_column(self, low_res: np.ndarray, iou: np.ndarray) -> int:
        """The predictor's single mask (multimask_output=False) among tokens 0..3 of one prompt."""

    def export_baseline(self, decoder: Any, path: Path) -> Path:
        """Export the reference implementation's own modules with ``decoder``'s weights (bench's baseline)."""
        from segdeploy.errors import BadInputError

        raise BadInputError(f"the {self.name} family has no official baseline")

    def baseline_runner(self, path: Path, threads: int | None) -> Any:
        """A runner of the baseline graph under this family's contract feeds."""
        from segdeploy.errors import BadInputError

        raise BadInputError(f"the {self.name} family has no official baseline")
