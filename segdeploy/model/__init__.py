"""The building blocks every decoder family shares, written for export: attention forms, the two-way
transformer, the prompt encoder, SAM's mask decoder (families subclass it), the decoder holder and
graph wrapper, and the compiled resizes. Imports no family."""

from segdeploy.model.decoder import TORCH_DTYPES, DecoderConfig, DecoderGraph, PromptableDecoder, cast_decoder

__all__ = ["TORCH_DTYPES", "DecoderConfig", "DecoderGraph", "PromptableDecoder", "cast_decoder"]
