"""What export traces and the eager reference runs for SAM 2: the family contract's inputs in, its
outputs out, in the graph form asked for (prompt labels to tokens, ignored-slot masking, the
single-mask stability choice, masks resized straight to the original size)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from segdeploy import contract
from segdeploy.contract import MaskOutput
from segdeploy.families.sam2.model import OUTPUT_TOKENS, Sam2Decoder, high_res_channels_last
from segdeploy.forms import AttentionForm, GraphForm, UpscaleForm
from segdeploy.model.decoder import DecoderGraph


class Sam2DecoderGraph(DecoderGraph):
    """Single-image SAM 2 graph; ``MaskOutput.SINGLE`` is SAM2ImagePredictor's single mask (token 0,
    or the best-scored multimask token where token 0 is unstable)."""

    def __init__(self, decoder: Sam2Decoder, mask_output: MaskOutput, postprocess: bool, form: GraphForm = GraphForm()) -> None:
        super().__init__(decoder, mask_output, postprocess, form)
        config = decoder.config
        self.stability = (config.stability_delta, config.stability_thresh)

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        return self.decode_sam2(image_embeddings, high_res_feats_0, high_res_feats_1, None, point_coords, point_labels, mask_input, has_mask_input, orig_im_size)

    def decode_sam2(
        self,
        image_embeddings: torch.Tensor,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        image_index: torch.Tensor | None,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """The contract's outputs; ``image_index`` [B] picks each prompt's image (one Gather per
        per-image input), None broadcasts the one image over every prompt."""
        channels_last = self.form.upscale == UpscaleForm.MATMUL
        sparse, src, pos_tokens, token_mask, (height, width) = self.prompt_tokens(
            image_embeddings, image_index, point_coords, point_labels, mask_input, has_mask_input, OUTPUT_TOKENS,
        )
        if channels_last:  # per-image rearrangements happen once per image, before any gather
            feat_s0, feat_s1 = high_res_channels_last(feat_s0, feat_s1)
        if image_index is not None:
            feat_s0, feat_s1 = torch.index_select(feat_s0, 0, image_index), torch.index_select(feat_s1, 0, image_index)
        mask_decoder = self.decoder.mask_decoder

        if self.dtype != torch.float32:
            src, sparse = src.to(self.dtype), sparse.to(self.dtype)
            feat_s0, feat_s1 = feat_s0.to(self.dtype), feat_s1.to(self.dtype)
        single = self.mask_output is MaskOutput.SINGLE
        tokens = MaskOutput.ALL.tokens if single else self.mask_output.tokens
        low_res_masks, iou_predictions, object_scores = mask_decoder(
            src, pos_tokens, (height, width), sparse, token_mask, tokens, (feat_s0, feat_s1),
            few_token=self.form.attention == AttentionForm.FEWTOKEN, upscale_matmul=channels_last,
        )
        if self.dtype != torch.float32:
            low_res_masks, iou_predictions, object_scores = low_res_masks.float(), iou_predictions.float(), object_scores.float()
        if single:
            low_res_masks, iou_predictions = select_stable_single(low_res_masks, iou_predictions, *self.stability)
        return self.contract_outputs(low_res_masks, iou_predictions, orig_im_size, object_scores)

    def upscale(self, low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """SAM 2's postprocessing: low-res logits resized straight to the original size."""
        return F.interpolate(low_res_masks, size=(orig_im_size[0], orig_im_size[1]), mode="bilinear", align_corners=False)


class Sam2MultiImageGraph(Sam2DecoderGraph):
    """The multi-image flavor: per-image inputs [I,...], each prompt names its image by ``image_index``;
    no in-graph postprocessing."""

    def __init__(self, decoder: Sam2Decoder, mask_output: MaskOutput, form: GraphForm = GraphForm()) -> None:
        super().__init__(decoder, mask_output, postprocess=False, form=form)

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        image_index: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        return self.decode_sam2(image_embeddings, high_res_feats_0, high_res_feats_1, image_index, point_coords, point_labels, mask_input, has_mask_input)


def stability_scores(logits: torch.Tensor, delta: float) -> torch.Tensor:
    """IoU of (logits > delta) and (logits > -delta) per mask [B,M,h,w] -> [B,M], 1 where both are
    empty; the pixel counts in fp32 (exact to 2^24)."""
    flat = logits.flatten(2)
    inner = (flat > delta).to(torch.float32).sum(-1)
    outer = (flat > -delta).to(torch.float32).sum(-1)
    return torch.where(outer > 0, inner / torch.clamp(outer, min=1.0), torch.ones_like(outer))


def select_stable_single(masks: torch.Tensor, iou: torch.Tensor, delta: float, thresh: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MaskDecoder._dynamic_multimask_via_stability without boolean indexing: tokens 0..3 in
    (masks [B,4,h,w], iou [B,4]), one mask per prompt out."""
    best = torch.argmax(iou[:, 1:], dim=1, keepdim=True) + 1  # [B,1]
    best_masks = torch.gather(masks, 1, best[:, :, None, None].expand(-1, 1, masks.shape[-2], masks.shape[-1]))
    best_iou = torch.gather(iou, 1, best)
    stable = stability_scores(masks[:, :1], delta) >= thresh  # [B,1]
    return torch.where(stable[:, :, None, None], masks[:, :1], best_masks), torch.where(stable, iou[:, :1], best_iou)


def decoder_graph(decoder: Sam2Decoder, layout: contract.GraphLayout, form: GraphForm = GraphForm()) -> Sam2DecoderGraph:
    """The module whose inputs and outputs are ``layout``'s, in ``form``."""
    if layout.multi_image:
        return Sam2MultiImageGraph(decoder, layout.mask_output, form)
    return Sam2DecoderGraph(decoder, layout.mask_output, layout.postprocess, form)


class CompiledSam2Graph(Sam2DecoderGraph):
    """The single-image graph with the straight resize written to compile (segdeploy.model.resize)."""

    def upscale(self, low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        from segdeploy.model.resize import resize_straight_compiled

        return resize_straight_compiled(low_res_masks, orig_im_size)


def compiled_graph(decoder: Sam2Decoder, layout: contract.GraphLayout, form: GraphForm = GraphForm()) -> torch.nn.Module:
    """The module AOTInductor compiles for ``layout``: ``decoder_graph`` where nothing is data-dependent."""
    if layout.postprocess:
        return CompiledSam2Graph(decoder, layout.mask_output, postprocess=True, form=form)
    return decoder_graph(decoder, layout, form)
