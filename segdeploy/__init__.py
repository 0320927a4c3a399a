"""segdeploy: export SAM-style promptable mask decoders to ONNX and TensorRT, and prove them equal
to the eager model. Importing this package imports nothing heavy; torch, onnx, onnxruntime and
TensorRT are loaded by the modules that need them."""

from segdeploy.version import __version__

__all__ = ["Decoder", "Prediction", "Prompt", "RequestLimits", "__version__"]


def __getattr__(name: str):
    """``segdeploy.Decoder``, ``segdeploy.Prompt`` and ``segdeploy.Prediction``, imported on first use."""
    if name in ("Decoder", "Prediction", "Prompt"):
        from segdeploy import runtime

        return getattr(runtime, name)
    if name == "RequestLimits":
        from segdeploy.limits import RequestLimits

        return RequestLimits
    raise AttributeError(f"module 'segdeploy' has no attribute {name!r}")
