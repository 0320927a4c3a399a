"""The SAM 2 family: SAM 2 and SAM 2.1 (Hiera tiny, small, base+, large), one decoder shape.

Everything that differs from SAM 1 is in this folder:
- ``contract.py``: inputs add ``high_res_feats_0``/``high_res_feats_1`` (projected), outputs add
  ``object_score_logits``; coordinates live in a 1024x1024 square;
- ``model.py``: the mask decoder with the object-score token and head, sigmoid IoU and the
  high-resolution skip additions (prompt encoder and transformer are SAM 1's);
- ``graph.py``: the graph wrappers, the stability-based single-mask choice, the straight resize;
- ``weights.py``: official ``sam_prompt_encoder.*``/``sam_mask_decoder.*`` keys, random weights;
- ``cases.py``: the verify matrix with SAM 2's prompt conventions (box first, always padded);
- ``rules.py``: the runtime's pre/postprocessing (SAM2Transforms and SAM2ImagePredictor);
- ``baseline.py``: the sam2 package's own modules exported as they are (bench's baseline).
"""

from __future__ import annotations

from pathlib import Path

from segdeploy.families.base import Family
from segdeploy.families.sam2 import contract as sam2_contract


class Sam2Family(Family):
    name = "sam2"
    title = "SAM 2"
    checkpoint_prefixes = ("sam_prompt_encoder.", "sam_mask_decoder.")
    unknown_inputs_text = "not a SAM 2 graph's"
    variant_names = sam2_contract.VARIANT_NAMES
    default_variant = sam2_contract.DEFAULT_VARIANT
    image_inputs = sam2_contract.IMAGE_INPUTS

    def input_specs(self, layout):
        return sam2_contract.input_specs(layout)

    def output_specs(self, layout):
        return sam2_contract.output_specs(layout)

    def load_decoder(self, variant, checkpoint, seed):
        from segdeploy.families.sam2.weights import load_decoder

        return load_decoder(variant, checkpoint, seed)

    def decoder_graph(self, decoder, layout, form):
        from segdeploy.families.sam2.graph import decoder_graph

        return decoder_graph(decoder, layout, form)

    def compiled_graph(self, decoder, layout, form):
        from segdeploy.families.sam2.graph import compiled_graph

        return compiled_graph(decoder, layout, form)

    def example_inputs(self, layout, prompts: int = 2, points: int = 3):
        import torch

        from segdeploy import contract

        images = 2 if layout.multi_image else 1  # two images, so the image count is traced as a dimension
        feeds = [torch.zeros(images, *spec.dims[1:]) for spec in layout.inputs()[:3]]
        if layout.multi_image:
            feeds.append(torch.tensor([1, 0] * (prompts // 2) + [0] * (prompts % 2)))
        feeds += [
            torch.zeros(prompts, points, 2),
            torch.ones(prompts, points),
            torch.zeros(prompts, 1, contract.LOW_RES_SIZE, contract.LOW_RES_SIZE),
            torch.zeros(prompts),
        ]
        if layout.postprocess:
            feeds.append(torch.tensor([contract.MODEL_INPUT_SIZE, contract.MODEL_INPUT_SIZE], dtype=torch.int64))
        return tuple(feeds)

    def draw_cases(self, rng, count, layout):
        from segdeploy.families.sam2.cases import draw_cases

        return draw_cases(rng, count, layout.postprocess, layout.multi_image)

    def image_feeds(self, rng, images):
        from segdeploy.families.sam2.cases import image_feeds

        return image_feeds(rng, images)

    low_res_clamp = sam2_contract.LOW_RES_CLAMP

    def prompt_rules(self):
        from segdeploy.families.sam2.rules import PROMPT_RULES

        return PROMPT_RULES

    def check_images(self, value, where=""):
        from segdeploy.families.sam2.rules import check_features

        return check_features(value, where)

    def upscale_on_host(self, low_res, orig_size):
        from segdeploy.families.sam2.rules import upscale_to_original

        return upscale_to_original(low_res, orig_size)

    def single_column(self, low_res, iou):
        from segdeploy.families.sam2.rules import single_column

        return single_column(low_res, iou)

    def export_baseline(self, decoder, path: Path) -> Path:
        from segdeploy.families.sam2.baseline import export_official

        return export_official(decoder, path, self.baseline_layout())

    def baseline_layout(self):
        from segdeploy.contract import MaskOutput

        return self.layout(MaskOutput.MULTI, postprocess=True)  # the sam2 modules, multimask, resized in the graph


FAMILY = Sam2Family()
