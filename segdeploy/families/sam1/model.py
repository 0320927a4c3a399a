"""The SAM 1 decoder: segment-anything's prompt encoder and mask decoder (the shared building
blocks as they are), for SAM ViT-B/L/H and MobileSAM, which share one decoder shape."""

from __future__ import annotations

from segdeploy.families.sam1.contract import DEFAULT_VARIANT, VARIANT_NAMES
from segdeploy.model.decoder import DecoderConfig, PromptableDecoder

VARIANTS: dict[str, DecoderConfig] = {name: DecoderConfig() for name in VARIANT_NAMES}

__all__ = ["DEFAULT_VARIANT", "VARIANTS", "SamDecoder"]


class SamDecoder(PromptableDecoder):
    """Holds ``prompt_encoder`` and ``mask_decoder`` under the official checkpoints' key names."""
