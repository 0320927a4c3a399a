"""Reading and writing ONNX files: atomic saves, segdeploy metadata, and the I/O a graph declares."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from segdeploy import contract
from segdeploy.errors import BadInputError

if TYPE_CHECKING:
    import onnx

_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32", 9: "bool"}


def write_atomically(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` through a temporary file in the same folder, so no half-written file
    is ever left under the final name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temp_name, path)
    except BaseException as exc:
        Path(temp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def load_graph(path: Path) -> onnx.ModelProto:
    """Load an ONNX file, or raise a one-line BadInputError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise BadInputError(f"{path} is not a readable ONNX file: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None


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
