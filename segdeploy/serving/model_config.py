"""Triton model configurations (config.pbtxt text): the request/response signature `segdeploy serve`
answers (the one place its names, dtypes and optional inputs are written: the server, the client, the
repositories and the README's table read them from here), and the contract's graphs for a stock
Triton server's onnxruntime and tensorrt backends."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from segdeploy.contract import IMAGE_EMBEDDINGS, ORIG_IM_SIZE, TensorSpec

MODEL_NAME = "sam_decoder"
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32", "bool": "TYPE_BOOL", "bytes": "TYPE_STRING"}
KSERVE_TYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "bool": "BOOL", "bytes": "BYTES"}
MASK_FORMATS = ("rle", "binary", "low_res")


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


@cache  # the families' per-image inputs do not change; requests ask for them on every click
def image_tensors() -> tuple[ServedTensor, ...]:
    """Every family's per-image inputs: the embedding, which all have, then the others. All optional:
    a click by image_id carries none; an inline click or a registration carries its family's."""
    from segdeploy.registry import families

    tensors: dict[str, ServedTensor] = {}
    for family in families():
        for spec in family.image_specs():
            first = spec.name == IMAGE_EMBEDDINGS.name
            tensors.setdefault(spec.name, (not first, ServedTensor(spec.name, spec.dtype, tuple(spec.dims[1:]), optional=True, doc=f"{family.title}: {spec.doc}")))
    return tuple(tensor for _, tensor in sorted(tensors.values(), key=lambda item: item[0]))


# What one `segdeploy serve` request carries besides the image's inputs: one prompt (a row of the batch
# axis), in the image's pixels, and how to answer it. Requests of the old schema (inline embeddings,
# orig_size, prompts) are answered as before: binary masks, every mask, low-res logits.
PROMPT_INPUTS = (
    ServedTensor("point_coords", "float32", (-1, 2), optional=True, ragged=True, doc="x,y in original image pixels"),
    ServedTensor("point_labels", "float32", (-1,), optional=True, ragged=True, doc="1 foreground, 0 background"),
    ServedTensor("box", "float32", (4,), optional=True, doc="x0,y0,x1,y1 in original image pixels"),
    ServedTensor("mask_input", "float32", (1, 256, 256), optional=True, doc="a previous low-res mask (logits)"),
    ServedTensor("orig_size", "int64", (2,), optional=True, doc="the image's (H, W); a click by image_id may leave it to the registration's"),
    ServedTensor("multimask_output", "bool", (1,), optional=True, doc="3 masks (default) or 1"),
)
STORE_INPUTS = (
    ServedTensor("image_id", "bytes", (1,), optional=True, doc="the stored image a click is on; with image inputs and no prompt: register them under this id (none: the server derives one from the content)"),
    ServedTensor("image", "bytes", (1,), optional=True, doc="register by image (serve --encoder): PNG/JPEG file bytes, or raw RGB (H*W*3 uint8, with orig_size)"),
    ServedTensor("mask_format", "bytes", (1,), optional=True, doc="rle (COCO RLE JSON in masks_rle; default for clicks by image_id), binary (masks; default for inline clicks) or low_res (logits only)"),
    ServedTensor("best_only", "bool", (1,), optional=True, doc="only the highest-scoring mask (default: true for clicks by image_id, false inline)"),
    ServedTensor("return_low_res", "bool", (1,), optional=True, doc="add low_res_masks to an rle answer (default false)"),
    ServedTensor("use_previous_logits", "bool", (1,), optional=True, doc="refine: the image's last low-res logits (kept in the store) as mask_input; none yet: no mask_input"),
)
SERVE_INPUTS = (*PROMPT_INPUTS, *STORE_INPUTS)
SERVE_OUTPUTS = (
    ServedTensor("masks", "bool", (-1, -1, -1), doc="mask_format binary: [M,H,W] masks at the original size"),
    ServedTensor("masks_rle", "bytes", (1,), doc="mask_format rle: the M masks as a JSON list of COCO RLEs ({size, counts})"),
    ServedTensor("scores", "float32", (-1,), doc="[M] predicted IoU (every click)"),
    ServedTensor("low_res_masks", "float32", (-1, 256, 256), doc="mask_format binary or low_res (or return_low_res): [M,256,256] logits"),
    ServedTensor("image_id", "bytes", (1,), doc="a registration's id (the one given or derived), or the image a click was on"),
)


def contract_table() -> str:
    """The served contract as a Markdown table (the README's)."""
    rows = ["| tensor | in/out | dtype | dims per row | optional | meaning |", "|---|---|---|---|---|---|"]
    for kind, tensors in (("in", [*image_tensors(), *SERVE_INPUTS]), ("out", list(SERVE_OUTPUTS))):
        for t in tensors:
            dims = "[" + ",".join(str(d) for d in t.dims) + "]"
            rows.append(f"| `{t.name}` | {kind} | {KSERVE_TYPES[t.dtype]} | {dims} | {'yes' if t.optional else ''} | {t.doc} |")
    return "\n".join(rows) + "\n"


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
        backend="python", inputs=[*image_tensors(), *SERVE_INPUTS], outputs=list(SERVE_OUTPUTS), max_batch_size=max_batch_size,
        queue_delay_us=queue_delay_us, parameters=parameters, instances=instances, kind=kind,
    )


def contract_tensors(specs: list[TensorSpec], tensorrt: bool = False) -> list[ServedTensor]:
    """The contract's tensors as Triton dims (symbolic dims as -1), for a model with max_batch_size 0;
    for TensorRT, orig_im_size is marked as the shape tensor it is."""
    return [
        ServedTensor(s.name, s.dtype, tuple(d if isinstance(d, int) else -1 for d in s.dims), shape_tensor=tensorrt and s.name == ORIG_IM_SIZE.name)
        for s in specs
    ]
