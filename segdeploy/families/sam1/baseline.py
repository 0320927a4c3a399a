"""The official `segment-anything` ONNX export (SamOnnxModel), rebuilt from the same weights, as the
baseline `segdeploy bench --baseline official` measures beside ours. Needs the `official` extra
(segment-anything), not torchvision."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Mapping
from pathlib import Path

from segdeploy.errors import MissingDependencyError
from segdeploy.graph_io import export_as_official_script

INSTALL_HINT = "pip install 'segdeploy[official]' (or pip install segment-anything==1.0)"


def import_official() -> tuple[types.ModuleType, types.ModuleType]:
    """segment-anything's ``modeling`` and ``utils.onnx`` modules, the only parts the baseline uses.

    The package's ``__init__`` imports torchvision (for its predictor), which is missing or does not
    import beside some torch builds (the CPU one included). Where the package does not import, it is
    registered without running its ``__init__``, so these two modules, which need only torch and
    numpy, still load; the package's top-level names (``sam_model_registry``, ``SamPredictor``)
    then stay unavailable in this process.
    """
    _register_package()
    try:
        modeling = importlib.import_module("segment_anything.modeling")
        onnx_utils = importlib.import_module("segment_anything.utils.onnx")
    except ImportError as exc:
        raise MissingDependencyError(f"the official baseline cannot import segment-anything ({exc}); {INSTALL_HINT}") from None
    return modeling, onnx_utils


def _register_package() -> None:
    """Import ``segment_anything`` normally, or, where its ``__init__`` fails, register it bare."""
    if sys.modules.get("segment_anything") is not None:
        return
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the official baseline needs the segment-anything package, which is not installed; {INSTALL_HINT}")
    try:
        importlib.import_module("segment_anything")
        return
    except Exception:  # its __init__ imports torchvision, which may be missing or fail to load (any error)
        pass
    for name in [name for name in sys.modules if name.startswith("segment_anything.")]:
        del sys.modules[name]  # drop what the failed import left, so every module is loaded once below
    package = types.ModuleType("segment_anything")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["segment_anything"] = package


def export_official(state_dict: Mapping, path: Path, opset: int = 17) -> Path:
    """Export SamOnnxModel (multimask, as its script's default) holding ``state_dict``'s decoder weights,
    with the official script's settings: only num_points dynamic, float orig_im_size."""
    import torch

    modeling, onnx_utils = import_official()
    sam = torch.nn.Module()
    sam.prompt_encoder = modeling.PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16)
    sam.mask_decoder = modeling.MaskDecoder(
        num_multimask_outputs=3,
        transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
    )
    sam.load_state_dict(dict(state_dict), strict=True)
    sam.requires_grad_(False)
    sam.image_encoder = torch.nn.Module()
    sam.image_encoder.img_size = 1024
    sam.mask_threshold = 0.0
    model = onnx_utils.SamOnnxModel(sam, return_single_mask=False).eval()
    dummy = {
        "image_embeddings": torch.randn(1, 256, 64, 64),
        "point_coords": torch.randint(0, 1024, (1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(0, 4, (1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, 256, 256),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    return export_as_official_script(model, dummy, path, opset)

