"""The runtime serving code imports: ``Decoder`` (prompts in image coordinates to masks on any
backend) and ``Prompt`` (one prompt of a batch)."""

from segdeploy.runtime.decoder import Decoder, Prediction
from segdeploy.limits import RequestLimits
from segdeploy.prompts import Prompt

__all__ = ["Decoder", "Prediction", "Prompt", "RequestLimits"]
