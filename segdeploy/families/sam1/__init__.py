"""The SAM 1 family: segment-anything's SAM (ViT-B/L/H) and MobileSAM, one decoder shape.

Everything that differs from the other families is in this folder:
- ``contract.py``: contract v1 (one image embedding) and the official export's signature;
- ``model.py``: the decoder holder with SAM's mask decoder as it is (the shared building blocks);
- ``graph.py``: the graph wrappers, SAM's crop-and-resize postprocessing, the official signature's
  single-mask selection, and the form AOTInductor compiles;
- ``weights.py``: official SAM/MobileSAM keys (``image_encoder.*`` ignored), random weights;
- ``cases.py``: the verify matrix with SAM's prompt conventions (clicks, then box, padding without a box);
- ``rules.py``: the runtime's pre/postprocessing (ResizeLongestSide and Sam.postprocess_masks);
- ``baseline.py``: segment-anything's ``SamOnnxModel`` export (bench's baseline).
"""

from __future__ import annotations

from pathlib import Path

from segdeploy.contract import IMAGE_EMBEDDINGS, ORIG_IM_SIZE, MaskOutput, Signature
from segdeploy.families.base import Family
from segdeploy.families.sam1 import contract as sam1_contract


class Sam1Family(Family):
    name = "sam1"
    title = "SAM"
    variant_names = sam1_contract.VARIANT_NAMES
    default_variant = sam1_contract.DEFAULT_VARIANT
    image_inputs = sam1_contract.IMAGE_INPUTS
    signatures = (Signature.SEGDEPLOY, Signature.OFFICIAL)
    official_mask_outputs = (MaskOutput.ALL, MaskOutput.BEST)
    official_mask_outputs_text = "all (SamOnnxModel's four masks) or best (return_single_mask=True)"
    checkpoint_prefixes = ("prompt_encoder.", "mask_decoder.")
    unknown_inputs_text = "neither segdeploy's contract nor the official export's signature"

    def input_specs(self, layout):
        return sam1_contract.input_specs(layout)

    def output_specs(self, layout):
        return sam1_contract.output_specs(layout)

    def layout_from_io(self, input_names, outputs, input_dtypes):
        if input_dtypes.get(ORIG_IM_SIZE.name) == "float32":  # the official export's float sizes
            return sam1_contract.official_layout_from_io(self, input_names, outputs)
        return super().layout_from_io(input_names, outputs, input_dtypes)

    def load_decoder(self, variant, checkpoint, seed):
        from segdeploy.families.sam1.weights import load_decoder

        return load_decoder(variant, checkpoint, seed)

    def decoder_graph(self, decoder, layout, form):
        from segdeploy.families.sam1.graph import decoder_graph

        return decoder_graph(decoder, layout, form)

    def compiled_graph(self, decoder, layout, form):
        from segdeploy.families.sam1.graph import compiled_graph

        return compiled_graph(decoder, layout, form)

    def example_inputs(self, layout):
        from segdeploy.families.sam1.graph import example_inputs

        return example_inputs(layout)

    def draw_cases(self, rng, count, layout):
        from segdeploy.families.sam1.cases import draw_cases

        return draw_cases(rng, count, layout.postprocess, layout.multi_image)

    def image_feeds(self, rng, images):
        from segdeploy.families.sam1.cases import image_feeds

        return image_feeds(rng, images)

    def prompt_rules(self):
        from segdeploy.families.sam1.rules import PROMPT_RULES

        return PROMPT_RULES

    def check_images(self, value, where=""):
        from segdeploy.prompts import check_embedding

        if isinstance(value, dict) and set(value) == set(self.image_inputs):
            value = value[IMAGE_EMBEDDINGS.name]
        return {IMAGE_EMBEDDINGS.name: check_embedding(value, where)}

    def upscale_on_host(self, low_res, orig_size):
        from segdeploy.families.sam1.rules import upscale_to_original

        return upscale_to_original(low_res, orig_size)

    def single_column(self, low_res, iou):
        return 0  # SamPredictor.predict(multimask_output=False): token 0

    def export_baseline(self, decoder, path: Path) -> Path:
        from segdeploy.families.sam1.baseline import export_official

        return export_official(decoder.state_dict(), path)

    def baseline_layout(self):
        return self.layout(MaskOutput.ALL, postprocess=True, signature=Signature.OFFICIAL)  # SamOnnxModel, return_single_mask=False


FAMILY = Sam1Family()
