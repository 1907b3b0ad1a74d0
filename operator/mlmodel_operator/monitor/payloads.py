"""Reading model inputs and outputs out of inference payloads, as named feature columns.

Open Inference Protocol v2: `inputs` / `outputs` tensors ({name, shape, datatype, data}), each
[batch, features...] tensor split into one column per feature (`name[j]`, or `name` when it has
one). KServe v1: `instances` / `predictions`, rows that are lists (`instances[j]`), objects
(their keys) or scalars. Anything else raises UnreadablePayload: the caller counts it and the
request is never affected.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

Columns = dict[str, list[Any]]

MAX_NAME_LENGTH = 64
V2_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
V1_PREDICT = re.compile(r"^/v1/models/[^/:]+:predict$")


class UnreadablePayload(ValueError):
    pass


def protocol_of(method: str, path: str) -> str:
    """The bounded protocol label of a request: v2, v1 or other."""
    if method == "POST" and V2_INFER.match(path):
        return "v2"
    if method == "POST" and V1_PREDICT.match(path):
        return "v1"
    return "other"


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def _name(text: str) -> str:
    return str(text)[:MAX_NAME_LENGTH]


def _v2_tensors(tensors: Any) -> Columns:
    if not isinstance(tensors, list) or not tensors:
        raise UnreadablePayload("no tensors")
    columns: Columns = {}
    for tensor in tensors:
        if not isinstance(tensor, dict) or "data" not in tensor:
            raise UnreadablePayload("a tensor without data")
        name = _name(tensor.get("name", "tensor"))
        values = list(_flatten(tensor["data"]))
        shape = tensor.get("shape") or [len(values)]
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise UnreadablePayload(f"tensor {name}: bad shape {shape}")
        if math.prod(shape) != len(values):
            raise UnreadablePayload(f"tensor {name}: shape {shape} does not hold {len(values)}")
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


def parse(
    protocol: str, request_body: bytes, response_body: bytes | None
) -> tuple[Columns, Columns]:
    """(input columns, output columns) of one exchange; output columns may be empty."""
    try:
        request = json.loads(request_body)
    except (ValueError, UnicodeDecodeError) as err:
        raise UnreadablePayload(f"request is not JSON: {err}") from None
    if not isinstance(request, dict):
        raise UnreadablePayload("request is not a JSON object")
    response: Any = None
    if response_body:
        try:
            response = json.loads(response_body)
        except (ValueError, UnicodeDecodeError):
            response = None  # an error page or a binary answer: inputs still count
    if protocol == "v2":
        inputs = _v2_tensors(request.get("inputs"))
        outputs = _v2_tensors(response["outputs"]) if _has(response, "outputs") else {}
    elif protocol == "v1":
        inputs = _v1_rows(request.get("instances"), "instances")
        outputs = (
            _v1_rows(response["predictions"], "predictions")
            if _has(response, "predictions")
            else {}
        )
    else:
        raise UnreadablePayload(f"protocol {protocol!r} carries no model payload")
    return inputs, outputs


def _has(document: Any, key: str) -> bool:
    return isinstance(document, dict) and isinstance(document.get(key), list)
