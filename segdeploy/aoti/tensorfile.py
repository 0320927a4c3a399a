"""A minimal file of named tensors that the C++ example reads and writes (no third-party parser on
either side). Little-endian:

    b"SEGDTNS1", u32 count, then per tensor:
    u32 name length, name (UTF-8), u8 dtype (1 float32, 2 int64), u8 rank, i64 dims[rank], data (C order)
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from segdeploy.errors import BadInputError
from segdeploy.graph_io import write_atomically

MAGIC = b"SEGDTNS1"
DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<i8")}
CODES = {np.dtype("float32"): 1, np.dtype("int64"): 2}


def write_tensors(path: Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write float32/int64 arrays by name, in the mapping's order, atomically."""
    chunks = [MAGIC, struct.pack("<I", len(tensors))]
    for name, array in tensors.items():
        array = np.asarray(array)
        if array.dtype not in CODES:
            raise BadInputError(f"{name}: the tensor file holds float32 and int64, got {array.dtype}")
        encoded = name.encode()
        chunks += [struct.pack("<I", len(encoded)), encoded, struct.pack("<BB", CODES[array.dtype], array.ndim)]
        chunks += [struct.pack(f"<{array.ndim}q", *array.shape), np.ascontiguousarray(array, DTYPES[CODES[array.dtype]]).tobytes()]
    write_atomically(Path(path), b"".join(chunks))


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a tensor file by name, in file order."""
    data = Path(path).read_bytes()
    if data[:8] != MAGIC:
        raise BadInputError(f"{path} is not a segdeploy tensor file (no {MAGIC.decode()} header)")
    (count,), offset, tensors = struct.unpack_from("<I", data, 8), 12, {}
    try:
        for _ in range(count):
            (length,) = struct.unpack_from("<I", data, offset)
            name = data[offset + 4 : offset + 4 + length].decode()
            code, rank = struct.unpack_from("<BB", data, offset + 4 + length)
            offset += 6 + length
            shape = struct.unpack_from(f"<{rank}q", data, offset)
            offset += 8 * rank
            dtype = DTYPES[code]
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if offset + size > len(data):
                raise ValueError("truncated")
            tensors[name] = np.frombuffer(data, dtype, int(np.prod(shape, dtype=np.int64)), offset).reshape(shape).copy()
            offset += size
    except (struct.error, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path} is a damaged tensor file ({type(exc).__name__}: {exc})") from None
    return tensors
