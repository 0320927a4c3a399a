"""Reading and writing ONNX files: atomic saves, segdeploy metadata, and the I/O a graph declares."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from segdeploy import contract
from segdeploy.errors import BadInputError

if TYPE_CHECKING:
    import onnx

_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32", 9: "bool"}


def file_mode() -> int:
    """The mode a new file gets under the process umask (0644 under 022), as ``open`` would give it."""
    try:
        with open("/proc/self/status") as status:  # Linux: read without changing it
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path: Path, data: bytes | None = None, *, copy_from: Path | None = None) -> None:
    """Write ``data`` (or a copy of the file ``copy_from``) to ``path`` through a temporary file in
    the same folder, so no half-written file is ever left under the final name; the file gets the
    permissions the umask gives (a temporary file alone would be 0600, unreadable to a service)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            if copy_from is not None:
                with open(copy_from, "rb") as source:
                    shutil.copyfileobj(source, stream, 1 << 20)
            else:
                stream.write(data)
            os.fchmod(stream.fileno(), file_mode())
        os.replace(temp_name, path)
    except BaseException as exc:
        Path(temp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def export_as_official_script(model, dummy: dict, path: Path, opset: int) -> Path:
    """Export a reference implementation's ``SamOnnxModel`` (``model``, traced on ``dummy``: inputs by
    name, in order) to ``path`` with its export script's settings: only ``num_points`` dynamic,
    constant folding, outputs masks, iou_predictions, low_res_masks."""
    import io
    import warnings

    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, tuple(dummy.values()), buffer, dynamo=False, export_params=True, opset_version=opset,
            do_constant_folding=True, input_names=list(dummy), output_names=["masks", "iou_predictions", "low_res_masks"],
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
        )
    write_atomically(Path(path), buffer.getvalue())
    return Path(path)


def load_graph(path: Path) -> onnx.ModelProto:
    """Load an ONNX file, or raise a one-line BadInputError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise BadInputError(f"{path} is not a readable ONNX file: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    if not model.graph.node or not model.graph.output:  # an empty file parses as an empty model
        raise BadInputError(f"{path} is not an ONNX graph: it holds no nodes or no outputs ({path.stat().st_size} bytes)")
    return model


def all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes and, after each, the nodes of its subgraphs (an ``If``'s two sides)."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                nodes.extend(all_nodes(subgraph))
    return nodes


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Store segdeploy's metadata (prefixed keys) in the model, replacing earlier values."""
    keep = [p for p in model.metadata_props if not p.key.startswith(contract.META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key in sorted(values):
        prop = model.metadata_props.add()
        prop.key, prop.value = contract.META_PREFIX + key, values[key]


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """segdeploy's metadata of a graph, keys without the prefix; empty for a foreign graph."""
    prefix = contract.META_PREFIX
    return {p.key[len(prefix):]: p.value for p in model.metadata_props if p.key.startswith(prefix)}


def value_specs(values) -> list[contract.TensorSpec]:
    """TensorSpecs of graph inputs or outputs as the graph declares them."""
    specs = []
    for value in values:
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_param if d.dim_param else d.dim_value for d in tensor_type.shape.dim)
        specs.append(contract.TensorSpec(value.name, _ONNX_DTYPES.get(tensor_type.elem_type, str(tensor_type.elem_type)), dims, ""))
    return specs


def graph_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
