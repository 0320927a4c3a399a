"""Serving: `segdeploy serve` on Triton Inference Server, and model repositories for stock Triton."""
