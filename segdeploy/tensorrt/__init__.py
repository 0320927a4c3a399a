"""TensorRT-facing code. Everything here but builder.py, runner and inspect imports without TensorRT:
profiles, the trtexec command, sidecars and the lint run on any machine."""
