"""The `sam2` package (PyPI 1.1.0) as the SAM 2 family's test oracle.

Its ``__init__`` initialises hydra and its transforms import torchvision, which does not import beside
the CPU torch build here: ``segdeploy.families.sam2.baseline.import_sam2`` loads the decoder modules
without the package ``__init__``, and ``sam2_predictor`` registers a torchvision stand-in (identity
image transforms, never reached: no image is set through the encoder) before loading the predictor.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import torch

from segdeploy.contract import Label
from segdeploy.families.sam2.baseline import import_sam2, official_modules


def official_outputs(holder, feeds: dict[str, np.ndarray], multimask: bool) -> dict[str, np.ndarray]:
    """SAM2ImagePredictor._predict prompt by prompt: the prompt's points without the ignored slots
    and without the padding point (the official prompt encoder appends it itself), no boxes (the
    predictor passes box corners as points), the mask input when on."""
    lows, ious, scores = [], [], []
    with torch.no_grad():
        for b in range(feeds["point_labels"].shape[0]):
            image = int(feeds["image_index"][b]) if "image_index" in feeds else 0
            labels = feeds["point_labels"][b]
            real = labels[labels != Label.IGNORED]
            assert real[-1] == Label.PADDING
            coords = torch.from_numpy(feeds["point_coords"][b, : len(real) - 1])[None]
            points = (coords, torch.from_numpy(real[:-1]).to(torch.int32)[None])
            mask = torch.from_numpy(feeds["mask_input"][b : b + 1]) if feeds["has_mask_input"][b] else None
            sparse, dense = holder.sam_prompt_encoder(points=points, boxes=None, masks=mask)
            low, iou, _, score = holder.sam_mask_decoder(
                image_embeddings=torch.from_numpy(feeds["image_embeddings"][image : image + 1]),
                image_pe=holder.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                repeat_image=False,
                high_res_features=[torch.from_numpy(feeds[f"high_res_feats_{i}"][image : image + 1]) for i in (0, 1)],
            )
            lows.append(low.numpy())
            ious.append(iou.numpy())
            scores.append(score.numpy())
    return {"low_res_masks": np.concatenate(lows), "iou_predictions": np.concatenate(ious), "object_score_logits": np.concatenate(scores)}


def _torchvision_stand_in() -> None:
    """Identity stand-ins for the image transforms SAM2Transforms builds (and jit-scripts) in its
    constructor, where torchvision does not import; an earlier stand-in (the SAM 1 predictor
    oracle's) is extended, not replaced."""
    names = ("Normalize", "Resize", "ToTensor")
    try:
        transforms = importlib.import_module("torchvision.transforms")
        if all(hasattr(transforms, name) for name in names):
            return
    except Exception:
        transforms = None
    if transforms is None or getattr(transforms, "__file__", None):  # missing, or a real one that failed
        transforms = types.ModuleType("torchvision.transforms")
        functional = sys.modules.get("torchvision.transforms.functional")
        if functional is not None and not getattr(functional, "__file__", None):
            transforms.functional = functional
    package = sys.modules.get("torchvision")
    if package is None or getattr(package, "__file__", None):
        package = types.ModuleType("torchvision")

    class Identity(torch.nn.Identity):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__()

    for name in names:
        if not hasattr(transforms, name):
            setattr(transforms, name, Identity)
    package.transforms = transforms
    sys.modules.update({"torchvision": package, "torchvision.transforms": transforms})


def sam2_predictor(decoder):
    """A SAM2ImagePredictor around the official modules holding ``decoder``'s weights."""
    import_sam2()
    _torchvision_stand_in()
    predictor_module = importlib.import_module("sam2.sam2_image_predictor")
    model = official_modules(decoder)
    model.image_size = 1024
    model.device = torch.device("cpu")
    return predictor_module.SAM2ImagePredictor(model)


def set_features(predictor, embedding: np.ndarray, high_res: list[np.ndarray], orig_size: tuple[int, int]) -> None:
    """What ``set_image`` leaves behind, with the given features (no encoder runs)."""
    predictor.reset_predictor()
    predictor._features = {"image_embed": torch.from_numpy(embedding), "high_res_feats": [torch.from_numpy(f) for f in high_res]}
    predictor._orig_hw = [tuple(orig_size)]
    predictor._is_image_set = True
