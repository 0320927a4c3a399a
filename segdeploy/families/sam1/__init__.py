"""The SAM 1 family: segment-anything's SAM (ViT-B/L/H) and MobileSAM, one decoder shape.

Where each part lives (it predates families and stays where other code imports it from):
- model: ``segdeploy/model/`` (prompt encoder, attention forms, two-way transformer, mask decoder,
  the graph wrappers);
- contract: ``segdeploy/contract.py`` (contract v1, the official export's signature);
- case matrix: ``segdeploy/cases.py``;
- checkpoint keys: ``segdeploy/weights.py`` (official SAM/MobileSAM layout, ``image_encoder.*`` ignored);
- pre/postprocessing: longest side resized to 1024 and padded (``segdeploy/runtime/prompts.py``),
  masks upsampled to 1024, cropped, resized (``segdeploy/model/sam_decoder.upscale_masks``,
  ``segdeploy/runtime/postprocess.py``); single mask = token 0;
- baseline: segment-anything's ``SamOnnxModel`` export (``segdeploy/baseline.py``).
"""

from __future__ import annotations

from pathlib import Path

from segdeploy import contract
from segdeploy.families.base import Family


class Sam1Family(Family):
    name = "sam1"
    variant_names = contract.VARIANT_NAMES
    default_variant = contract.DEFAULT_VARIANT
    image_inputs = (contract.IMAGE_EMBEDDINGS.name,)

    def input_specs(self, layout):
        if layout.official:
            return list(contract.OFFICIAL_INPUTS)
        return contract.input_specs(layout.postprocess, layout.multi_image)

    def output_specs(self, layout):
        if layout.official:
            return contract.official_output_specs(layout.mask_output)
        return contract.output_specs(layout.mask_output, layout.postprocess)

    def load_decoder(self, variant, checkpoint, seed):
        from segdeploy.weights import load_decoder

        return load_decoder(variant, checkpoint, seed)

    def decoder_graph(self, decoder, layout, form):
        from segdeploy.model import decoder_graph

        return decoder_graph(decoder, layout, form)

    def compiled_graph(self, decoder, layout, form):
        from segdeploy.aoti.graph import compiled_graph

        return compiled_graph(decoder, layout, form)

    def example_inputs(self, layout):
        from segdeploy.export import example_inputs

        return example_inputs(layout)

    def draw_cases(self, rng, count, layout):
        from segdeploy.cases import draw_cases

        return draw_cases(rng, count, layout.postprocess, layout.multi_image)

    def image_feeds(self, rng, images):
        from segdeploy.cases import sam1_image_feeds

        return sam1_image_feeds(rng, images)

    def prompt_rules(self):
        from segdeploy.runtime.prompts import SAM1_RULES

        return SAM1_RULES

    def check_images(self, value, where=""):
        from segdeploy.runtime.prompts import check_embedding

        return {contract.IMAGE_EMBEDDINGS.name: check_embedding(value, where)}

    def upscale_on_host(self, low_res, orig_size):
        from segdeploy.runtime.postprocess import upscale_to_original

        return upscale_to_original(low_res, orig_size)

    def single_column(self, low_res, iou):
        return 0  # SamPredictor.predict(multimask_output=False): token 0

    def export_baseline(self, decoder, path: Path) -> Path:
        from segdeploy.baseline import export_official

        return export_official(decoder.state_dict(), path)

    def baseline_runner(self, path: Path, threads):
        from segdeploy.baseline import official_runner

        return official_runner(path, threads=threads)


FAMILY = Sam1Family()
