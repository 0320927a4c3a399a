"""PyTorch definition of SAM's prompt encoder and mask decoder, written for export."""

from segdeploy.model.sam_decoder import (
    DEFAULT_VARIANT,
    VARIANTS,
    DecoderConfig,
    DecoderGraph,
    MultiImageDecoderGraph,
    SamDecoder,
    decoder_graph,
)

__all__ = ["DEFAULT_VARIANT", "VARIANTS", "DecoderConfig", "DecoderGraph", "MultiImageDecoderGraph", "SamDecoder", "decoder_graph"]
