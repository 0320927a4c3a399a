"""The `segment-anything` reference implementation, loaded as a test oracle.

Its package ``__init__`` imports torchvision, which does not import beside the CPU torch build on
these machines; the oracle needs only ``modeling`` and ``utils.onnx``, which
``segdeploy.families.sam1.baseline.import_official`` loads with or without torchvision.
"""

from __future__ import annotations

import torch

from segdeploy.families.sam1.baseline import import_official


def official_decoder(state_dict: dict[str, torch.Tensor]):
    """The official PromptEncoder and MaskDecoder holding our weights (strict load)."""
    modeling, _ = import_official()
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    mask_decoder = modeling.MaskDecoder(
        num_multimask_outputs=3,
        transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    holder = torch.nn.Module()
    holder.prompt_encoder = prompt_encoder
    holder.mask_decoder = mask_decoder
    holder.load_state_dict(state_dict, strict=True)
    return holder.eval()


@torch.no_grad()
def official_predict(holder, embeddings, points, labels, box, mask, multimask: bool):
    """SAM's own path (as SamPredictor.predict_torch): points/labels [B,n,2]/[B,n] or None,
    box [B,4] or None, mask [B,1,256,256] or None. Returns (low_res_masks, iou_predictions)."""
    sparse, dense = holder.prompt_encoder(
        points=None if points is None else (points, labels), boxes=box, masks=mask
    )
    return holder.mask_decoder(
        image_embeddings=embeddings,
        image_pe=holder.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def official_onnx_model(state_dict: dict[str, torch.Tensor], return_single_mask: bool = False):
    """The official SamOnnxModel export wrapper around a Sam holding our decoder weights."""
    sam = official_decoder(state_dict).requires_grad_(False)
    sam.image_encoder = torch.nn.Module()
    sam.image_encoder.img_size = 1024
    sam.mask_threshold = 0.0
    return import_official()[1].SamOnnxModel(sam, return_single_mask=return_single_mask).eval()
