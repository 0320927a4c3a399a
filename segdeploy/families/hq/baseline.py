"""segment_anything_hq's own modules rebuilt with our weights: the tests' oracle and, exported by the
package's own ``SamOnnxModel`` as its script does, the baseline ``segdeploy bench --baseline
official`` measures an HQ-SAM graph against. Needs ``segment-anything-hq`` (PyPI 0.3), not its
torchvision or timm."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

from segdeploy.errors import MissingDependencyError
from segdeploy.graph_io import export_as_official_script

PACKAGE = "segment_anything_hq"
INSTALL_HINT = "pip install --no-deps segment-anything-hq==0.3"
MODULES = ("modeling.common", "modeling.prompt_encoder", "modeling.transformer", "modeling.mask_decoder_hq", "modeling.sam")


def import_hq() -> dict[str, types.ModuleType]:
    """The package's decoder modules (and ``utils.onnx``), by their last name.

    Its ``__init__`` imports torchvision (the predictor's image resizing) and ``modeling/__init__``
    imports timm (Light HQ-SAM's TinyViT encoder); neither is needed by the decoder, so both
    packages are registered without running their ``__init__`` where they do not import."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(f"the HQ-SAM baseline needs the segment-anything-hq package, which is not installed; {INSTALL_HINT}")
        location = list(spec.submodule_search_locations)[0]
        for name, path in ((PACKAGE, location), (f"{PACKAGE}.modeling", f"{location}/modeling")):
            try:
                importlib.import_module(name)
                continue
            except Exception:  # torchvision or timm missing or failing to load (any error)
                for stale in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                    del sys.modules[stale]
            package = types.ModuleType(name)
            package.__path__ = [path]
            sys.modules[name] = package
    try:
        modules = {name.rsplit(".", 1)[-1]: importlib.import_module(f"{PACKAGE}.{name}") for name in MODULES}
        modeling = sys.modules[f"{PACKAGE}.modeling"]
        if not hasattr(modeling, "Sam"):  # what utils.onnx imports from the bare package
            modeling.Sam = modules["sam"].Sam
        modules["onnx"] = importlib.import_module(f"{PACKAGE}.utils.onnx")
    except ImportError as exc:
        raise MissingDependencyError(f"the HQ-SAM baseline cannot import segment-anything-hq ({exc}); {INSTALL_HINT}") from None
    return modules


def official_sam(decoder):
    """segment_anything_hq's ``Sam`` (PromptEncoder + MaskDecoderHQ as ``_build_sam`` makes them)
    holding ``decoder``'s weights (strict load under the official key names), with a stand-in
    image encoder (only its ``img_size`` is read)."""
    import torch

    modules = import_hq()
    config = decoder.config
    prompt_encoder = modules["prompt_encoder"].PromptEncoder(
        embed_dim=config.embed_dim, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=config.mask_in_chans,
    )
    mask_decoder = modules["mask_decoder_hq"].MaskDecoderHQ(
        num_multimask_outputs=config.num_multimask_outputs,
        transformer=modules["transformer"].TwoWayTransformer(depth=config.depth, embedding_dim=config.embed_dim, mlp_dim=config.mlp_dim, num_heads=config.num_heads),
        transformer_dim=config.embed_dim, iou_head_depth=3, iou_head_hidden_dim=256, vit_dim=config.vit_dim,
    )
    holder = torch.nn.Module()
    holder.prompt_encoder, holder.mask_decoder = prompt_encoder, mask_decoder
    holder.load_state_dict(decoder.state_dict(), strict=True)
    encoder = torch.nn.Module()
    encoder.img_size = 1024
    sam = modules["sam"].Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)
    return sam.eval().requires_grad_(False)


def export_official(decoder, path: Path, hq_token_only: bool = False, multimask_output: bool = True, opset: int = 17) -> Path:
    """Export the package's ``SamOnnxModel`` holding ``decoder``'s weights with its script's settings
    (only num_points dynamic, float orig_im_size, interm_embeddings [4,1,64,64,C])."""
    import torch

    model = import_hq()["onnx"].SamOnnxModel(official_sam(decoder), hq_token_only=hq_token_only, multimask_output=multimask_output).eval()
    channels = decoder.config.vit_dim
    dummy = {
        "image_embeddings": torch.randn(1, 256, 64, 64),
        "interm_embeddings": torch.randn(4, 1, 64, 64, channels),
        "point_coords": torch.randint(0, 1024, (1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(0, 4, (1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, 256, 256),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    return export_as_official_script(model, dummy, path, opset)
