"""Triton's binary tensor data extension to the Open Inference Protocol v2 over HTTP.

A message with the header `Inference-Header-Content-Length: N` holds N bytes of JSON, then the
raw data of each tensor whose `parameters` carry `binary_data_size`, in tensor order. Numbers
are little-endian and packed row-major; BOOL is one byte per value; BYTES is each element as a
4-byte little-endian length followed by that many bytes. Triton's clients (`tritonclient`) send
inputs this way by default, and ask for outputs this way with `binary_data_output`.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

HEADER = "Inference-Header-Content-Length"
NUMPY_TYPES = {
    "BOOL": np.dtype("?"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_LENGTH = struct.Struct("<I")


class BadBinaryData(ValueError):
    pass


def json_length(header: str | None, body_size: int) -> int | None:
    """The JSON part's length from the header's value; None when the message is all JSON."""
    if header is None:
        return None
    if not header.strip().isdigit() or int(header) > body_size:
        raise BadBinaryData(f"bad {HEADER}: {header[:20]!r}")
    return int(header)


def binary_size(tensor: dict[str, Any]) -> int | None:
    parameters = tensor.get("parameters")
    if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadBinaryData(f"bad binary_data_size {size!r}")
    return size


def decode_array(datatype: object, raw: bytes | memoryview) -> np.ndarray:
    """A numeric tensor's raw data as a flat numpy view of the buffer: no value is copied."""
    dtype = NUMPY_TYPES.get(datatype)  # type: ignore[call-overload]
    if dtype is None:
        raise BadBinaryData(f"datatype {datatype!r} is not read from binary data")
    if len(raw) % dtype.itemsize:
        raise BadBinaryData(f"{len(raw)} bytes are not a whole number of {datatype} values")
    return np.frombuffer(raw, dtype=dtype)


def decode_bytes(raw: bytes | memoryview) -> list[str]:
    """The elements of a BYTES tensor's raw data, as text."""
    view = memoryview(raw)
    values, offset = [], 0
    while offset < len(view):
        if offset + _LENGTH.size > len(view):
            raise BadBinaryData("a BYTES element is cut short")
        (size,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + size > len(view):
            raise BadBinaryData("a BYTES element is cut short")
        # Categories are compared as text; bytes that are not UTF-8 stay distinct as escapes.
        values.append(bytes(view[offset : offset + size]).decode("utf-8", "backslashreplace"))
        offset += size
    return values
