"""Triton model configurations (config.pbtxt text): the request/response signature `segdeploy serve`
answers, and the contract's graphs for a stock Triton server's onnxruntime and tensorrt backends."""

from __future__ import annotations

import json
from dataclasses import dataclass

from segdeploy.contract import IMAGE_EMBEDDINGS, ORIG_IM_SIZE, TensorSpec

MODEL_NAME = "sam_decoder"
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32", "bool": "TYPE_BOOL"}


@dataclass(frozen=True)
class ServedTensor:
    """One input or output of a Triton model: dims after the batch dimension."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False
    ragged: bool = False  # allow_ragged_batch: requests of different sizes share a batch
    doc: str = ""
    shape_tensor: bool = False  # TensorRT shape-tensor input (orig_im_size): is_shape_tensor


def image_tensors() -> tuple[ServedTensor, ...]:
    """Every family's per-image inputs: the embedding, which all have, then the others (optional:
    a request carries those of the served decoder's family)."""
    from segdeploy.registry import families

    tensors: dict[str, ServedTensor] = {}
    for family in families():
        for spec in family.image_specs():
            required = spec.name == IMAGE_EMBEDDINGS.name
            tensors.setdefault(spec.name, ServedTensor(spec.name, spec.dtype, tuple(spec.dims[1:]), optional=not required, doc=f"{family.title}: {spec.doc}"))
    return tuple(sorted(tensors.values(), key=lambda t: t.optional))


# What one `segdeploy serve` request carries besides the image's inputs: one prompt, in the image's pixels.
PROMPT_INPUTS = (
    ServedTensor("point_coords", "float32", (-1, 2), optional=True, ragged=True, doc="x,y in original image pixels"),
    ServedTensor("point_labels", "float32", (-1,), optional=True, ragged=True, doc="1 foreground, 0 background"),
    ServedTensor("box", "float32", (4,), optional=True, doc="x0,y0,x1,y1 in original image pixels"),
    ServedTensor("mask_input", "float32", (1, 256, 256), optional=True, doc="a previous low-res mask (logits)"),
    ServedTensor("orig_size", "int64", (2,), doc="the image's (H, W)"),
    ServedTensor("multimask_output", "bool", (1,), optional=True, doc="3 masks (default) or 1"),
)
SERVE_OUTPUTS = (
    ServedTensor("masks", "bool", (-1, -1, -1), doc="[M,H,W] masks at the original size"),
    ServedTensor("scores", "float32", (-1,), doc="[M] predicted IoU"),
    ServedTensor("low_res_masks", "float32", (-1, 256, 256), doc="[M,256,256] logits"),
)


def _tensor_block(tensor: ServedTensor) -> str:
    fields = [f'name: "{tensor.name}"', f"data_type: {TRITON_TYPES[tensor.dtype]}", f"dims: [ {', '.join(str(d) for d in tensor.dims)} ]"]
    if tensor.optional:
        fields.append("optional: true")
    if tensor.ragged:
        fields.append("allow_ragged_batch: true")
    if tensor.shape_tensor:
        fields.append("is_shape_tensor: true")
    return "  { " + " ".join(fields) + " }"


def render_config(
    *, backend: str, inputs: list[ServedTensor], outputs: list[ServedTensor], max_batch_size: int, queue_delay_us: int | None,
    instances: int = 1, kind: str = "KIND_CPU", parameters: dict[str, str] | None = None, platform: str | None = None,
) -> str:
    """config.pbtxt text. ``queue_delay_us`` None leaves out the dynamic batcher (every request alone)."""
    lines = [f'name: "{MODEL_NAME}"', f'backend: "{backend}"'] if platform is None else [f'name: "{MODEL_NAME}"', f'platform: "{platform}"']
    lines.append(f"max_batch_size: {max_batch_size}")
    lines += ["input ["] + [",\n".join(_tensor_block(t) for t in inputs)] + ["]"]
    lines += ["output ["] + [",\n".join(_tensor_block(t) for t in outputs)] + ["]"]
    if queue_delay_us is not None:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}")
    lines.append(f"instance_group [ {{ kind: {kind} count: {instances} }} ]")
    for key, value in (parameters or {}).items():
        lines.append(f"parameters {{ key: {json.dumps(key)} value: {{ string_value: {json.dumps(value)} }} }}")
    return "\n".join(lines) + "\n"


def serve_config(max_batch_size: int, queue_delay_us: int | None, parameters: dict[str, str], instances: int = 1, kind: str = "KIND_CPU") -> str:
    """The python-backend model `segdeploy serve` runs."""
    return render_config(
        backend="python", inputs=[*image_tensors(), *PROMPT_INPUTS], outputs=list(SERVE_OUTPUTS), max_batch_size=max_batch_size,
        queue_delay_us=queue_delay_us, parameters=parameters, instances=instances, kind=kind,
    )


def contract_tensors(specs: list[TensorSpec], tensorrt: bool = False) -> list[ServedTensor]:
    """The contract's tensors as Triton dims (symbolic dims as -1), for a model with max_batch_size 0;
    for TensorRT, orig_im_size is marked as the shape tensor it is."""
    return [
        ServedTensor(s.name, s.dtype, tuple(d if isinstance(d, int) else -1 for d in s.dims), shape_tensor=tensorrt and s.name == ORIG_IM_SIZE.name)
        for s in specs
    ]
