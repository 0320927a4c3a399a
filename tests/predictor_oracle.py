"""segment-anything's ``SamPredictor`` as the runtime's oracle, with an image embedding set on it
directly (no image encoder runs).

``segment_anything.utils.transforms`` imports torchvision for *image* resizing, which does not
import beside the CPU torch build on these machines; the predictor needs only its coordinate
transforms, so where torchvision is missing, a stand-in module that refuses every call is
registered (tests only; it is never reached, since no image is set through the encoder).
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import torch
from oracle import official_decoder


def _torchvision_stand_in() -> None:
    try:
        importlib.import_module("torchvision.transforms.functional")
        return
    except Exception:
        pass

    def refuse(*_args, **_kwargs):
        raise RuntimeError("torchvision stand-in: image resizing is not available in the tests")

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize = functional.to_pil_image = refuse
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    package = types.ModuleType("torchvision")
    package.transforms = transforms
    sys.modules.update({"torchvision": package, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional})


def official_predictor(state_dict: dict[str, torch.Tensor]):
    """A SamPredictor around a Sam holding our decoder weights (strict load) and a stub encoder."""
    holder = official_decoder(state_dict)
    _torchvision_stand_in()
    from segment_anything.modeling import Sam
    from segment_anything.predictor import SamPredictor

    encoder = torch.nn.Module()
    encoder.img_size = 1024
    sam = Sam(image_encoder=encoder, prompt_encoder=holder.prompt_encoder, mask_decoder=holder.mask_decoder).eval()
    return SamPredictor(sam)


def set_embedding(predictor, embedding: np.ndarray, orig_size: tuple[int, int]) -> None:
    """What ``set_image`` leaves behind, with ``embedding`` [1,256,64,64] as the features."""
    predictor.reset_image()
    predictor.features = torch.from_numpy(embedding)
    predictor.original_size = tuple(orig_size)
    predictor.input_size = predictor.transform.get_preprocess_shape(orig_size[0], orig_size[1], 1024)
    predictor.is_image_set = True
