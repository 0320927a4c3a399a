"""segdeploy: export SAM-style promptable mask decoders to ONNX and TensorRT, and prove them equal
to the eager model. Importing this package imports nothing heavy; torch, onnx, onnxruntime and
TensorRT are loaded by the modules that need them."""

__version__ = "0.1.0"
