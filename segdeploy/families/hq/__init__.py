"""The HQ-SAM family: segment_anything_hq's MaskDecoderHQ on SAM's prompt encoder (ViT-B/L/H, and
Light HQ-SAM's TinyViT), one decoder shape but for the ViT width C its early feature map has.

Everything that differs from the other families is in this folder:
- ``contract.py``: SAM's inputs plus ``interm_embeddings`` [1,64,64,C]; masks are SAM's tokens
  fused with the HQ token; the official HQ export's signature;
- ``model.py``: SAM's mask decoder plus the HQ token, its hypernetwork and the HQ feature path;
- ``graph.py``: the graph wrappers (HQ features once per image), SAM's postprocessing, the official
  signature's selection, the compiled form;
- ``weights.py``: official ``sam_hq_vit_*.pth`` keys (``image_encoder.*`` ignored), random weights;
- ``cases.py``: the verify matrix (SAM's prompts; early features beside each embedding);
- ``rules.py``: the runtime's rules (SamPredictor's, with ``interm_features``, one mask per prompt);
- ``baseline.py``: segment_anything_hq's own ``SamOnnxModel`` export (bench's baseline), and the
  package's modules as the tests' oracle.

A family object bound to a variant (``bind``, from a graph's metadata or an export's variant) holds
that variant's C and the export-time ``hq_token_only`` choice.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from segdeploy.contract import ORIG_IM_SIZE, MaskOutput, Signature
from segdeploy.errors import BadInputError
from segdeploy.families.base import Family
from segdeploy.families.hq import contract as hq_contract

TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


class HqFamily(Family):
    name = "hq"
    title = "HQ-SAM"
    variant_names = hq_contract.VARIANT_NAMES
    default_variant = hq_contract.DEFAULT_VARIANT
    image_inputs = hq_contract.IMAGE_INPUTS
    signatures = (Signature.SEGDEPLOY, Signature.OFFICIAL)
    official_mask_outputs = (MaskOutput.SINGLE, MaskOutput.BEST)
    official_mask_outputs_text = ("single (SamOnnxModel's default, multimask_output=False: token 0) or best (multimask_output=True: "
                                  "the best-scored of tokens 1..3), each plus the HQ token")
    checkpoint_prefixes = ("mask_decoder.hf_token.", "mask_decoder.compress_vit_feat.")
    export_options = (hq_contract.HQ_TOKEN_ONLY,)

    def __init__(self, variant: str | None = None, hq_token_only: bool = False) -> None:
        self.variant = variant
        self.hq_token_only = hq_token_only

    @property
    def channels(self) -> int | str:
        """C of ``interm_embeddings``: the bound variant's, else symbolic."""
        return hq_contract.VIT_CHANNELS[self.variant] if self.variant else hq_contract.VIT_CHANNELS_DIM

    def __repr__(self) -> str:
        return f"<{self.title} decoder family {self.name!r} ({self.variant or 'any variant'}{', hq_token_only' if self.hq_token_only else ''})>"

    def bind(self, metadata):
        variant = metadata.get("variant")
        flag = str(metadata.get(hq_contract.HQ_TOKEN_ONLY, "")).lower()
        if flag not in TRUE + FALSE:
            raise BadInputError(f"{hq_contract.HQ_TOKEN_ONLY} must be 1 or 0, got {flag!r}")
        return _bound(variant if variant in hq_contract.VIT_CHANNELS else None, flag in TRUE)

    def bound_metadata(self):
        return {hq_contract.HQ_TOKEN_ONLY: "1" if self.hq_token_only else "0"}

    def input_specs(self, layout):
        return hq_contract.input_specs(layout, self.channels)

    def output_specs(self, layout):
        return hq_contract.output_specs(layout)

    def image_specs(self):
        specs = super().image_specs()
        if isinstance(self.channels, str):  # unbound (e.g. a served model config listing every family's inputs): C varies
            specs = [hq_contract.interm_spec(-1) if s.name == "interm_embeddings" else s for s in specs]
        return specs

    def layout_from_io(self, input_names, outputs, input_dtypes):
        if input_dtypes.get(ORIG_IM_SIZE.name) == "float32":  # the official export's float sizes
            if list(input_names) != [s.name for s in hq_contract.official_input_specs(self.channels)]:
                raise BadInputError(f"inputs {input_names} are neither segdeploy's contract nor the official HQ-SAM export's")
            # a foreign graph names no variant: read as the default one's (verify rebuilds that variant;
            # another width is then named by the contract check)
            family = self if self.variant else self.bind({"variant": self.default_variant})
            return family.layout(MaskOutput.BEST, postprocess=True, signature=Signature.OFFICIAL)
        return super().layout_from_io(input_names, outputs, input_dtypes)

    def load_decoder(self, variant, checkpoint, seed):
        from segdeploy.families.hq.weights import load_decoder

        return load_decoder(variant, checkpoint, seed)

    def decoder_graph(self, decoder, layout, form):
        from segdeploy.families.hq.graph import decoder_graph

        return decoder_graph(decoder, layout, form, self.hq_token_only)

    def compiled_graph(self, decoder, layout, form):
        from segdeploy.families.hq.graph import compiled_graph

        return compiled_graph(decoder, layout, form, self.hq_token_only)

    def example_inputs(self, layout):
        from segdeploy.families.hq.graph import example_inputs

        return example_inputs(layout, self._concrete_channels())

    def _concrete_channels(self) -> int:
        if isinstance(self.channels, str):
            raise BadInputError("an HQ-SAM family object without a variant has no ViT width; read it from a graph's metadata")
        return self.channels

    def draw_cases(self, rng, count, layout):
        from segdeploy.families.hq.cases import draw_cases

        return draw_cases(rng, self._concrete_channels(), count, layout.postprocess, layout.multi_image)

    def image_feeds(self, rng, images):
        from segdeploy.families.hq.cases import image_feeds

        return image_feeds(rng, images, self._concrete_channels())

    def prompt_rules(self):
        from segdeploy.prompts import LONGEST_SIDE_RULES

        return LONGEST_SIDE_RULES

    def check_images(self, value, where=""):
        from segdeploy.families.hq.rules import check_features

        return check_features(value, None if isinstance(self.channels, str) else self.channels, where)

    def upscale_on_host(self, low_res, orig_size):
        from segdeploy.prompts import upscale_longest_side

        return upscale_longest_side(low_res, orig_size)

    def single_column(self, low_res, iou):
        return 0  # SamPredictor.predict(multimask_output=False): token 0 (fused with the HQ token)

    def multimask_column(self, low_res, iou):
        from segdeploy.families.hq.rules import multimask_column

        return multimask_column(iou)

    def official_images(self, feeds):
        import numpy as np

        interm = feeds["interm_embeddings"]  # [1,64,64,C] -> the official stack [4,1,64,64,C]; only [0] is read
        return feeds | {"interm_embeddings": np.ascontiguousarray(np.broadcast_to(interm[None], (hq_contract.OFFICIAL_INTERM_BLOCKS, *interm.shape)))}

    def export_baseline(self, decoder, path: Path) -> Path:
        from segdeploy.families.hq.baseline import export_official

        return export_official(decoder, path, self.hq_token_only)  # multimask_output=True: baseline_layout's best

    def baseline_layout(self):
        return self.layout(MaskOutput.BEST, postprocess=True, signature=Signature.OFFICIAL)


@cache
def _bound(variant: str | None, hq_token_only: bool) -> HqFamily:
    return HqFamily(variant, hq_token_only)


FAMILY = _bound(None, False)
