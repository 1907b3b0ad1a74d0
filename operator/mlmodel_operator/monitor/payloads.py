"""Reading model inputs and outputs out of inference payloads, as named feature columns.

Open Inference Protocol v2: `inputs` / `outputs` tensors ({name, shape, datatype, data}), each
[batch, features...] tensor split into one column per feature (`name[j]`, or `name` when it has
one); tensor data in JSON or in Triton's binary extension (binary.py). KServe v1: `instances` /
`predictions`, rows that are lists (`instances[j]`), objects (their keys) or scalars. Anything
else raises UnreadablePayload: the caller counts it and the request is never affected. No input
can make this fail otherwise: nesting is bounded and read without recursion.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from mlmodel_operator.monitor import binary

Columns = dict[str, list[Any]]

MAX_NAME_LENGTH = 64
MAX_DEPTH = 32  # nesting of tensor data or rows; deeper payloads are unreadable
V2_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
V1_PREDICT = re.compile(r"^/v1/models/[^/:]+:predict$")


class UnreadablePayload(ValueError):
    pass


@dataclass(frozen=True)
class Exchange:
    """One request and its answer, as the drift worker gets them."""

    protocol: str
    status: int
    request_body: bytes | bytearray
    response_body: bytes | bytearray | None
    # Inference-Header-Content-Length of each, when it uses the binary extension.
    request_json_length: str | None = None
    response_json_length: str | None = None

    @property
    def size(self) -> int:
        return len(self.request_body) + len(self.response_body or b"")


def protocol_of(method: str, path: str) -> str:
    """The bounded protocol label of a request: v2, v1 or other."""
    if method == "POST" and V2_INFER.match(path):
        return "v2"
    if method == "POST" and V1_PREDICT.match(path):
        return "v1"
    return "other"


def _flatten(data: Any) -> list[Any]:
    """Nested lists as one flat list, without recursion: any depth is safe to read."""
    if not isinstance(data, list):
        return [data]
    values: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) >= MAX_DEPTH:
                    raise UnreadablePayload(f"data nested deeper than {MAX_DEPTH}")
                stack.append(iter(item))
                break
            values.append(item)
        else:
            stack.pop()
    return values


def _name(text: object) -> str:
    return str(text)[:MAX_NAME_LENGTH]


def _shape(shape: object, size: int, name: str) -> list[int]:
    if shape is None or shape == []:
        return [size]
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise UnreadablePayload(f"tensor {name}: bad shape {str(shape)[:50]}")
    if math.prod(shape) != size:
        raise UnreadablePayload(f"tensor {name}: shape {shape} does not hold {size} values")
    return shape


def _v2_tensors(tensors: Any, raw: memoryview | None) -> Columns:
    """Columns of a list of tensors; `raw` is what follows the JSON with the binary extension."""
    if not isinstance(tensors, list) or not tensors:
        raise UnreadablePayload("no tensors")
    columns: Columns = {}
    offset = 0
    for tensor in tensors:
        if not isinstance(tensor, dict):
            raise UnreadablePayload("a tensor that is not an object")
        name = _name(tensor.get("name", "tensor"))
        size = binary.binary_size(tensor)
        if size is not None:
            if raw is None or offset + size > len(raw):
                raise UnreadablePayload(f"tensor {name}: binary data missing")
            values = binary.decode(tensor.get("datatype"), raw[offset : offset + size])
            offset += size
        elif "data" in tensor:
            values = _flatten(tensor["data"])
        else:
            raise UnreadablePayload(f"tensor {name}: no data")
        shape = _shape(tensor.get("shape"), len(values), name)
        batch = shape[0] if shape else 1
        width = len(values) // batch if batch else 0
        if tensor.get("datatype") == "BYTES":
            values = [v if isinstance(v, str) else str(v) for v in values]
        if width == 1:
            columns[name] = values
        else:
            for j in range(width):
                columns[_name(f"{name}[{j}]")] = values[j::width]
    return columns


def _v1_rows(rows: Any, key: str) -> Columns:
    if not isinstance(rows, list) or not rows:
        raise UnreadablePayload(f"no {key}")
    columns: Columns = {}
    first = rows[0]
    if isinstance(first, dict):
        for row in rows:
            if not isinstance(row, dict):
                raise UnreadablePayload(f"{key}: mixed rows")
            for field, value in row.items():
                columns.setdefault(_name(field), []).append(value)
    elif isinstance(first, list):
        width = len(first)
        for row in rows:
            if not isinstance(row, list) or len(row) != width:
                raise UnreadablePayload(f"{key}: ragged rows")
        for j in range(width):
            columns[_name(f"{key}[{j}]")] = [row[j] for row in rows]
    else:
        columns[key] = list(rows)
    return columns


def _document(body: bytes | bytearray, header: str | None) -> tuple[Any, memoryview | None]:
    """The JSON document of a body, and the binary data after it (binary extension)."""
    try:
        length = binary.json_length(header, len(body))
        if length is None:
            return json.loads(body), None
        view = memoryview(body)
        return json.loads(bytes(view[:length])), view[length:]
    except binary.BadBinaryData as err:
        raise UnreadablePayload(str(err)) from None
    except RecursionError:
        raise UnreadablePayload("JSON nested too deep") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise UnreadablePayload(f"not JSON: {err}") from None


def parse(exchange: Exchange) -> tuple[Columns, Columns]:
    """(input columns, output columns) of one exchange; output columns may be empty."""
    try:
        return _parse(exchange)
    except binary.BadBinaryData as err:
        raise UnreadablePayload(str(err)) from None


def _parse(exchange: Exchange) -> tuple[Columns, Columns]:
    request, request_raw = _document(exchange.request_body, exchange.request_json_length)
    if not isinstance(request, dict):
        raise UnreadablePayload("request is not a JSON object")
    response: Any = None
    response_raw = None
    if exchange.response_body:
        try:
            response, response_raw = _document(
                exchange.response_body, exchange.response_json_length
            )
        except UnreadablePayload:
            response = None  # an error page or an answer in another format: inputs still count
    if exchange.protocol == "v2":
        inputs = _v2_tensors(request.get("inputs"), request_raw)
        outputs = (
            _v2_tensors(response["outputs"], response_raw) if _has(response, "outputs") else {}
        )
    elif exchange.protocol == "v1":
        inputs = _v1_rows(request.get("instances"), "instances")
        outputs = (
            _v1_rows(response["predictions"], "predictions")
            if _has(response, "predictions")
            else {}
        )
    else:
        raise UnreadablePayload(f"protocol {exchange.protocol!r} carries no model payload")
    return inputs, outputs


def _has(document: Any, key: str) -> bool:
    return isinstance(document, dict) and isinstance(document.get(key), list)
