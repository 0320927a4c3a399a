"""Compiled PyTorch engines: the decoder exported with torch.export and compiled by AOTInductor into a
.pt2 package (CPU or CUDA) with a JSON sidecar, loadable from Python and from C++ (libtorch)."""
