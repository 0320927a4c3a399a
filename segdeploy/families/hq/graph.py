"""What export traces and the eager reference runs for HQ-SAM: the family contract's inputs in, its
outputs out, in the graph form asked for (prompt labels to tokens, ignored-slot masking, the HQ
features once per image, SAM's crop-and-resize postprocessing), the official export's signature,
and the form AOTInductor compiles."""

from __future__ import annotations

import torch
from torch import nn

from segdeploy import contract
from segdeploy.contract import MaskOutput
from segdeploy.families.hq.model import OUTPUT_TOKENS, HqDecoder
from segdeploy.forms import AttentionForm, GraphForm, UpscaleForm
from segdeploy.model.decoder import DecoderGraph
from segdeploy.model.resize import upscale_masks, upscale_masks_compiled


class HqDecoderGraph(DecoderGraph):
    """Single-image HQ-SAM graph: each mask column is SAM's token plus the HQ token (or the HQ token
    alone with ``hq_token_only``); SAM's postprocessing."""

    def __init__(self, decoder: HqDecoder, mask_output: MaskOutput, postprocess: bool, form: GraphForm = GraphForm(), hq_token_only: bool = False) -> None:
        super().__init__(decoder, mask_output, postprocess, form)
        self.hq_token_only = hq_token_only

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        interm_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        return self.decode_hq(image_embeddings, interm_embeddings, None, point_coords, point_labels, mask_input, has_mask_input, orig_im_size)

    def decode_hq(
        self,
        image_embeddings: torch.Tensor,
        interm_embeddings: torch.Tensor,
        image_index: torch.Tensor | None,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """The contract's outputs; ``image_index`` [B] picks each prompt's image, None broadcasts
        the one image over every prompt."""
        low_res_masks, iou_predictions = self.low_res(image_embeddings, interm_embeddings, image_index, point_coords, point_labels, mask_input, has_mask_input, self.mask_output.tokens)
        return self.contract_outputs(low_res_masks, iou_predictions, orig_im_size)

    def low_res(
        self, image_embeddings, interm_embeddings, image_index, point_coords, point_labels, mask_input, has_mask_input, tokens: tuple[int, ...],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits [B,M,256,256] and IoU [B,M] of SAM's ``tokens``, fused with the HQ token."""
        sparse, src, pos_tokens, token_mask, grid = self.prompt_tokens(
            image_embeddings, image_index, point_coords, point_labels, mask_input, has_mask_input, OUTPUT_TOKENS,
        )
        mask_decoder = self.decoder.mask_decoder
        if self.dtype != torch.float32:
            src, sparse = src.to(self.dtype), sparse.to(self.dtype)
            image_embeddings, interm_embeddings = image_embeddings.to(self.dtype), interm_embeddings.to(self.dtype)
        channels_last = self.form.upscale == UpscaleForm.MATMUL
        hq_features = mask_decoder.hq_features(image_embeddings, interm_embeddings, channels_last)  # once per image
        if image_index is not None:
            hq_features = torch.index_select(hq_features, 0, image_index)
        low_res_masks, iou_predictions = mask_decoder(
            src, pos_tokens, grid, sparse, token_mask, tokens, hq_features, self.hq_token_only,
            few_token=self.form.attention == AttentionForm.FEWTOKEN, upscale_matmul=channels_last,
        )
        if self.dtype != torch.float32:
            low_res_masks, iou_predictions = low_res_masks.float(), iou_predictions.float()
        return low_res_masks, iou_predictions

    def upscale(self, low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        return upscale_masks(low_res_masks, orig_im_size)


class HqMultiImageGraph(HqDecoderGraph):
    """The multi-image flavor: per-image inputs [I,...], each prompt names its image by
    ``image_index``; no in-graph postprocessing."""

    def __init__(self, decoder: HqDecoder, mask_output: MaskOutput, form: GraphForm = GraphForm(), hq_token_only: bool = False) -> None:
        super().__init__(decoder, mask_output, postprocess=False, form=form, hq_token_only=hq_token_only)

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        interm_embeddings: torch.Tensor,
        image_index: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        return self.decode_hq(image_embeddings, interm_embeddings, image_index, point_coords, point_labels, mask_input, has_mask_input)


class HqOfficialSignatureGraph(HqDecoderGraph):
    """segment_anything_hq's SamOnnxModel signature (interm_embeddings [4,1,64,64,C], only [0] read;
    float32 ``orig_im_size``; one prompt per call; one mask out), computed by our decoder, right at
    every image size. The mask is the official selection: with ``multimask`` (its
    ``multimask_output=True``, ``--mask-output best``) the best scored of tokens 1..3, else token 0
    (its default, ``--mask-output single``), each plus the HQ token; ``hq_token_only`` as the graph's."""

    def __init__(self, decoder: HqDecoder, form: GraphForm = GraphForm(), hq_token_only: bool = False, multimask: bool = True) -> None:
        super().__init__(decoder, MaskOutput.MULTI if multimask else MaskOutput.SINGLE, postprocess=True, form=form, hq_token_only=hq_token_only)

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        interm_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        low_res_masks, iou_predictions = self.low_res(
            image_embeddings, interm_embeddings[0], None, point_coords, point_labels, mask_input, has_mask_input, self.mask_output.tokens,
        )
        if self.mask_output is MaskOutput.MULTI:  # multimask_output=True: the best of tokens 1..3
            low_res_masks, iou_predictions = select_best(low_res_masks, iou_predictions)
        return self.upscale(low_res_masks, orig_im_size.to(torch.int64)), iou_predictions, low_res_masks


def select_best(masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MaskDecoderHQ's multimask selection without boolean indexing: the best-scored column."""
    best = torch.argmax(iou, dim=1, keepdim=True)
    index = best[:, :, None, None].expand(-1, 1, masks.shape[-2], masks.shape[-1])
    return torch.gather(masks, 1, index), torch.gather(iou, 1, best)


def decoder_graph(decoder: HqDecoder, layout: contract.GraphLayout, form: GraphForm = GraphForm(), hq_token_only: bool = False) -> HqDecoderGraph:
    """The module whose inputs and outputs are ``layout``'s, in ``form``."""
    if layout.official:
        return HqOfficialSignatureGraph(decoder, form, hq_token_only, multimask=layout.mask_output is MaskOutput.BEST)
    if layout.multi_image:
        return HqMultiImageGraph(decoder, layout.mask_output, form, hq_token_only)
    return HqDecoderGraph(decoder, layout.mask_output, layout.postprocess, form, hq_token_only)


class CompiledHqGraph(HqDecoderGraph):
    """The single-image graph with SAM's postprocessing written to compile."""

    def upscale(self, low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        return upscale_masks_compiled(low_res_masks, orig_im_size)


def compiled_graph(decoder: HqDecoder, layout: contract.GraphLayout, form: GraphForm = GraphForm(), hq_token_only: bool = False) -> nn.Module:
    """The module AOTInductor compiles for ``layout``: ``decoder_graph`` where nothing is data-dependent."""
    if layout.postprocess and not layout.official:
        return CompiledHqGraph(decoder, layout.mask_output, postprocess=True, form=form, hq_token_only=hq_token_only)
    return decoder_graph(decoder, layout, form, hq_token_only)


def example_inputs(layout: contract.GraphLayout, channels: int, prompts: int = 2, points: int = 3) -> tuple:
    """Inputs for tracing, shaped by the contract (values do not matter: nothing is data-dependent)."""
    side = contract.EMBEDDING_SIZE
    if layout.official:
        prompts = 1
        images = [torch.zeros(contract.IMAGE_EMBEDDINGS.dims), torch.zeros(4, 1, side, side, channels)]
    elif layout.multi_image:  # two images, so the image count is traced as a dimension
        images = [
            torch.zeros((2, *contract.IMAGE_EMBEDDINGS.dims[1:])), torch.zeros(2, side, side, channels),
            torch.tensor([1, 0] * (prompts // 2) + [0] * (prompts % 2)),
        ]
    else:
        images = [torch.zeros(contract.IMAGE_EMBEDDINGS.dims), torch.zeros(1, side, side, channels)]
    feeds = images + [
        torch.zeros(prompts, points, 2),
        torch.ones(prompts, points),
        torch.zeros(prompts, 1, contract.LOW_RES_SIZE, contract.LOW_RES_SIZE),
        torch.zeros(prompts),
    ]
    if layout.official:
        feeds.append(torch.tensor([1500.0, 2250.0]))
    elif layout.postprocess:
        feeds.append(torch.tensor([contract.MODEL_INPUT_SIZE, contract.MODEL_INPUT_SIZE], dtype=torch.int64))
    return tuple(feeds)
