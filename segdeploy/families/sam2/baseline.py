"""The sam2 package's own prompt encoder and mask decoder, rebuilt with our weights: the oracle of
the tests and, exported as they are, the baseline ``segdeploy bench --baseline official`` measures
a SAM 2 graph against. Needs the ``sam2`` package (PyPI 1.1.0), not its hydra or torchvision."""

from __future__ import annotations

import importlib
import importlib.util
import io
import sys
import types
import warnings
from pathlib import Path

from segdeploy.errors import MissingDependencyError
from segdeploy.graph_io import write_atomically

INSTALL_HINT = "SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0 (needs setuptools>=70.1, tqdm, pillow)"
MODULES = ("sam2.modeling.sam.prompt_encoder", "sam2.modeling.sam.mask_decoder", "sam2.modeling.sam.transformer")


def import_sam2() -> dict[str, types.ModuleType]:
    """The sam2 package's prompt encoder, mask decoder and transformer modules.

    ``sam2/__init__.py`` initialises hydra (a config system the decoder does not need); the package
    is registered without running it, so only torch, numpy, tqdm and pillow are needed.
    """
    if "sam2" not in sys.modules:
        spec = importlib.util.find_spec("sam2")
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(f"the SAM 2 baseline needs the sam2 package, which is not installed; {INSTALL_HINT}")
        package = types.ModuleType("sam2")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["sam2"] = package
    try:
        return {name.rsplit(".", 1)[-1]: importlib.import_module(name) for name in MODULES}
    except ImportError as exc:
        raise MissingDependencyError(f"the SAM 2 baseline cannot import sam2 ({exc}); {INSTALL_HINT}") from None


def official_modules(decoder):
    """A module holding the sam2 package's ``sam_prompt_encoder`` and ``sam_mask_decoder`` (as
    SAM2Base builds them for the released configs, with SAM2ImagePredictor's stability-based
    single mask) loaded strictly with ``decoder``'s weights under the official key names."""
    import torch

    from segdeploy.families.sam2.weights import to_official

    modules = import_sam2()
    config = decoder.config
    holder = torch.nn.Module()
    holder.sam_prompt_encoder = modules["prompt_encoder"].PromptEncoder(
        embed_dim=config.embed_dim, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=config.mask_in_chans,
    )
    holder.sam_mask_decoder = modules["mask_decoder"].MaskDecoder(
        num_multimask_outputs=config.num_multimask_outputs,
        transformer=modules["transformer"].TwoWayTransformer(
            depth=config.depth, embedding_dim=config.embed_dim, mlp_dim=config.mlp_dim, num_heads=config.num_heads,
        ),
        transformer_dim=config.embed_dim, iou_head_depth=3, iou_head_hidden_dim=256,
        use_high_res_features=True, iou_prediction_use_sigmoid=True, pred_obj_scores=True,
        pred_obj_scores_mlp=config.pred_obj_scores_mlp, use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=config.stability_delta,
        dynamic_multimask_stability_thresh=config.stability_thresh,
    )
    holder.load_state_dict(to_official(decoder.state_dict()), strict=True)
    return holder.eval().requires_grad_(False)


def baseline_module(holder):
    """The module the baseline exports (the class is defined here: torch is imported on use)."""
    import torch
    from torch.nn import functional as F

    class Baseline(torch.nn.Module):
        """The sam2 modules as SAM2ImagePredictor calls them for a batch of prompts on one image
        (``repeat_image=True``, multimask output), plus the mask input switch and the resize to
        the original size that every SAM 2 ONNX export adds; inputs and outputs are this
        family's contract (multi, in-graph postprocessing), prompts already padded."""

        def __init__(self) -> None:
            super().__init__()
            self.sam_prompt_encoder = holder.sam_prompt_encoder
            self.sam_mask_decoder = holder.sam_mask_decoder

        def forward(self, image_embeddings, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input, has_mask_input, orig_im_size):
            encoder = self.sam_prompt_encoder
            sparse = encoder._embed_points(point_coords, point_labels, pad=False)
            weight = has_mask_input.reshape(-1, 1, 1, 1)
            dense = weight * encoder._embed_masks(mask_input) + (1 - weight) * encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            low_res, iou, _, object_scores = self.sam_mask_decoder(
                image_embeddings=image_embeddings, image_pe=encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense, multimask_output=True, repeat_image=True,
                high_res_features=[high_res_feats_0, high_res_feats_1],
            )
            masks = F.interpolate(low_res, size=(orig_im_size[0], orig_im_size[1]), mode="bilinear", align_corners=False)
            return masks, iou, low_res, object_scores

    return Baseline().eval()


def export_official(decoder, path: Path, layout, opset: int = 17) -> Path:
    """Export the baseline module (prompts and points dynamic) to ``path``, with ``layout``'s inputs
    and outputs (the family's ``baseline_layout``)."""
    import torch

    module = baseline_module(official_modules(decoder))
    inputs, outputs = layout.inputs(), layout.outputs()
    feeds = (
        torch.randn(1, 256, 64, 64), torch.randn(1, 32, 256, 256), torch.randn(1, 64, 128, 128),
        torch.rand(2, 3, 2) * 1024, torch.tensor([[1.0, 0.0, -1.0]] * 2), torch.randn(2, 1, 256, 256),
        torch.tensor([1.0, 0.0]), torch.tensor([1500, 2250]),
    )
    dynamic_axes = {s.name: {i: d for i, d in enumerate(s.dims) if isinstance(d, str)} for s in inputs + outputs}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, feeds, buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=[s.name for s in inputs], output_names=[s.name for s in outputs],
            dynamic_axes={k: v for k, v in dynamic_axes.items() if v},
        )
    write_atomically(Path(path), buffer.getvalue())
    return Path(path)

