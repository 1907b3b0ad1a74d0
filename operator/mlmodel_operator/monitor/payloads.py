"""Reading model inputs and outputs out of inference payloads, as named feature columns, within
a feature budget per direction.

Open Inference Protocol v2: `inputs` / `outputs` tensors ({name, shape, datatype, data}); each
[batch, ...] tensor gives one column per feature of a row (`name[j]`, or `name` when a row holds
one value), tensor data in JSON or in Triton's binary extension (binary.py). KServe v1:
`instances` / `predictions`, rows that are lists (`instances[j]`), objects (their keys) or
scalars. Anything else raises UnreadablePayload: the caller counts it and the request is never
affected.

OpenAI: the proxy reads the answer as it passes (openai.py) and hands over its facts, not the
text: `{"prompt_tokens": n}` as the request and `{"completion_tokens": m, "finish_reason": r}`
as the answer, one column each.

Only the first `budget` features of each direction are read, in the payload's order (tensor by
tensor, then by position in a row): a row's values past the budget are never walked by Python
code, and binary tensors are sliced as numpy views, so a 3x224x224 image costs what its first
features cost. JSON is parsed with orjson, which measured 10x faster than the standard library
and 1.6x faster than msgspec on a 250 KB image body. Nesting is bounded and walked without
recursion. Feature names are safe label values (labels.py).

A numeric tensor (or v1 list rows) with values past the budget is also given whole, as a
(batch, width) array, for the projection that watches wide inputs (projection.py).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import orjson

from mlmodel_operator.monitor import binary
from mlmodel_operator.monitor.labels import safe_label
from mlmodel_operator.monitor.openai import ENDPOINTS
from mlmodel_operator.monitor.projection import MAX_WIDTH

Columns = dict[str, list[Any]]
Wide = dict[str, np.ndarray]  # tensor name: its rows, (batch, width)

DEFAULT_BUDGET = 64  # features per direction
MAX_DEPTH = 32  # nesting of tensor data or rows; deeper payloads are unreadable
V2_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
V1_PREDICT = re.compile(r"^/v1/models/[^/:]+:predict$")


class UnreadablePayload(ValueError):
    pass


@dataclass(frozen=True)
class Exchange:
    """One request and its answer, as the analyst gets them."""

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


class Parsed(NamedTuple):
    inputs: Columns
    outputs: Columns
    over_budget: int  # values past the budget: not read as features
    wide_inputs: Wide | None = None  # the whole rows of input tensors with such values
    wide_outputs: Wide | None = None


def protocol_of(method: str, path: str) -> str:
    """The bounded protocol label of a request: v2, v1, openai or other."""
    if method == "POST" and V2_INFER.match(path):
        return "v2"
    if method == "POST" and V1_PREDICT.match(path):
        return "v1"
    if method == "POST" and path in ENDPOINTS:
        return "openai"
    return "other"


def _prefix(data: Any, count: int) -> list[Any]:
    """The first `count` scalars of nested lists, in order, without recursion; the walk stops
    there, so what lies past them is never visited."""
    if not isinstance(data, list):
        return [data]
    values: list[Any] = []
    stack = [iter(data)]
    while stack and len(values) < count:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) >= MAX_DEPTH:
                    raise UnreadablePayload(f"data nested deeper than {MAX_DEPTH}")
                stack.append(iter(item))
                break
            values.append(item)
            if len(values) == count:
                break
        else:
            stack.pop()
    return values


def _shape(shape: object, name: str) -> list[int] | None:
    if shape is None or shape == []:
        return None
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise UnreadablePayload(f"tensor {name}: bad shape {str(shape)[:50]}")
    return shape


def _rows_of_json(data: Any, shape: list[int] | None, take: int, name: str) -> list[list[Any]]:
    """The first `take` values of each row of a tensor's JSON data."""
    if shape is None:  # one value per row: the whole data is one column
        values = _prefix(data, 2**62)
        return [[v] for v in values]
    batch, width = shape[0], math.prod(shape[1:])
    if not isinstance(data, list):
        raise UnreadablePayload(f"tensor {name}: data is not a list")
    if len(data) == batch * width and not (data and isinstance(data[0], list)):
        return [data[r * width : r * width + take] for r in range(batch)]  # flat, row-major
    if len(data) != batch:
        raise UnreadablePayload(f"tensor {name}: shape {shape} does not match its data")
    rows = [_prefix(row, take) for row in data]
    if any(len(row) != take for row in rows):
        raise UnreadablePayload(f"tensor {name}: shape {shape} does not match its data")
    return rows


def _rows_of_binary(
    datatype: object, raw: memoryview, shape: list[int] | None, take: int, name: str
) -> list[list[Any]]:
    if datatype == "BYTES":
        values = binary.decode_bytes(raw)
        width = math.prod(shape[1:]) if shape else 1
        if shape is not None and len(values) != math.prod(shape):
            raise UnreadablePayload(f"tensor {name}: shape {shape} does not hold {len(values)}")
        return [values[r * width : r * width + take] for r in range(len(values) // max(width, 1))]
    array = binary.decode_array(datatype, raw)
    if shape is None:
        return [[v] for v in array.tolist()]
    if array.size != math.prod(shape):
        raise UnreadablePayload(f"tensor {name}: shape {shape} does not hold {array.size}")
    rows = array.reshape(shape[0], -1) if shape[0] else array.reshape(0, 0)
    return rows[:, :take].tolist()  # a view until here: only what is taken becomes Python


def _v2_tensors(tensors: Any, raw: memoryview | None, budget: int) -> tuple[Columns, int, Wide]:
    """Columns of a list of tensors within the budget, the values left unread, and the whole
    rows of the numeric tensors that have such values; `raw` is what follows the JSON with the
    binary extension."""
    if not isinstance(tensors, list) or not tensors:
        raise UnreadablePayload("no tensors")
    columns: Columns = {}
    wide: Wide = {}
    offset, left, skipped = 0, budget, 0
    for tensor in tensors:
        if not isinstance(tensor, dict):
            raise UnreadablePayload("a tensor that is not an object")
        name = safe_label(tensor.get("name", "tensor"))
        shape = _shape(tensor.get("shape"), name)
        width = math.prod(shape[1:]) if shape else 1
        take = min(width, left)
        size = binary.binary_size(tensor)
        chunk = None
        if size is not None:
            if raw is None or offset + size > len(raw):
                raise UnreadablePayload(f"tensor {name}: binary data missing")
            chunk = raw[offset : offset + size]
            offset += size
        elif "data" not in tensor:
            raise UnreadablePayload(f"tensor {name}: no data")
        if take < width and shape is not None:
            rows_whole = _whole_rows(tensor, chunk, shape)
            if rows_whole is not None:
                wide[name] = rows_whole
        if take == 0:  # the budget is spent: the tensor is counted, not read as features
            skipped += _declared_values(tensor)
            continue
        if chunk is not None:
            rows = _rows_of_binary(tensor.get("datatype"), chunk, shape, take, name)
        else:
            rows = _rows_of_json(tensor["data"], shape, take, name)
        skipped += len(rows) * (width - take)
        left -= take
        text = tensor.get("datatype") == "BYTES"
        by_column = zip(*rows, strict=True)  # rows all hold `take` values
        # No rows (a batch of 0) give no columns: hence not strict here.
        for feature, column in zip(column_names(name, width, take), by_column, strict=False):
            columns[feature] = [_text(v) for v in column] if text else list(column)
    return columns, skipped, wide


def _whole_rows(tensor: dict, chunk: memoryview | None, shape: list[int]) -> np.ndarray | None:
    """A numeric tensor's rows as one (batch, width) array; None for text, for data that is
    not a regular array of numbers, and for rows wider than MAX_WIDTH."""
    batch, width = shape[0], math.prod(shape[1:])
    if tensor.get("datatype") == "BYTES" or width > MAX_WIDTH or batch == 0:
        return None
    try:
        if chunk is not None:
            array = binary.decode_array(tensor.get("datatype"), chunk)
        else:
            array = np.asarray(tensor["data"], dtype=np.float64)
    except (ValueError, TypeError, binary.BadBinaryData):
        return None
    if array.size != batch * width:
        return None
    return array.reshape(batch, width)


def _declared_values(tensor: Any) -> int:
    """The values a tensor's shape declares; 0 for one whose shape is not a list of counts."""
    shape = tensor.get("shape") if isinstance(tensor, dict) else None
    if isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape):
        return math.prod(shape)
    return 0


@functools.lru_cache(maxsize=1024)
def column_names(name: str, width: int, take: int) -> tuple[str, ...]:
    """The feature names of a tensor's first `take` columns: `name`, or `name[j]`; made once
    per tensor name and shape, since every payload of a model repeats them."""
    if width == 1:
        return (name,)
    return tuple(safe_label(f"{name}[{j}]") for j in range(take))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _v1_rows(rows: Any, key: str, budget: int) -> tuple[Columns, int, Wide]:
    if not isinstance(rows, list) or not rows:
        raise UnreadablePayload(f"no {key}")
    columns: Columns = {}
    wide: Wide = {}
    skipped = 0
    first = rows[0]
    if isinstance(first, dict):
        for row in rows:
            if not isinstance(row, dict):
                raise UnreadablePayload(f"{key}: mixed rows")
            for field, value in row.items():
                name = safe_label(field)
                column = columns.get(name)
                if column is None:
                    if len(columns) >= budget:
                        skipped += 1
                        continue
                    column = columns[name] = []
                column.append(value)
    elif isinstance(first, list):
        width = len(first)
        for row in rows:
            if not isinstance(row, list) or len(row) != width:
                raise UnreadablePayload(f"{key}: ragged rows")
        take = min(width, budget)
        skipped = len(rows) * (width - take)
        for j in range(take):
            columns[f"{key}[{j}]"] = [row[j] for row in rows]
        # Not a regular array of numbers: its first values are still watched.
        if take < width <= MAX_WIDTH:
            with contextlib.suppress(ValueError, TypeError):
                wide[key] = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    else:
        columns[key] = list(rows)
    return columns, skipped, wide


def _document(body: bytes | bytearray, header: str | None) -> tuple[Any, memoryview | None]:
    """The JSON document of a body, and the binary data after it (binary extension)."""
    try:
        length = binary.json_length(header, len(body))
        if length is None:
            return orjson.loads(body), None
        view = memoryview(body)
        return orjson.loads(view[:length]), view[length:]
    except binary.BadBinaryData as err:
        raise UnreadablePayload(str(err)) from None
    except orjson.JSONDecodeError as err:  # also nesting over orjson's limit, and bad UTF-8
        raise UnreadablePayload(f"not JSON: {err}") from None


def parse(exchange: Exchange, budget: int = DEFAULT_BUDGET) -> Parsed:
    """Input and output columns of one exchange (outputs may be empty), each within `budget`
    features."""
    try:
        return _parse(exchange, budget)
    except binary.BadBinaryData as err:
        raise UnreadablePayload(str(err)) from None


def _parse(exchange: Exchange, budget: int) -> Parsed:
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
    outputs: Columns = {}
    skipped_out = 0
    wide_in: Wide = {}
    wide_out: Wide = {}
    if exchange.protocol == "v2":
        inputs, skipped, wide_in = _v2_tensors(request.get("inputs"), request_raw, budget)
        if _has(response, "outputs"):
            outputs, skipped_out, wide_out = _v2_tensors(response["outputs"], response_raw, budget)
    elif exchange.protocol == "v1":
        inputs, skipped, wide_in = _v1_rows(request.get("instances"), "instances", budget)
        if _has(response, "predictions"):
            outputs, skipped_out, wide_out = _v1_rows(
                response["predictions"], "predictions", budget
            )
    elif exchange.protocol == "openai":
        # The proxy's own facts of the exchange: flat, a handful of values.
        inputs, skipped = {k: [v] for k, v in request.items()}, 0
        if isinstance(response, dict):
            outputs = {k: [v] for k, v in response.items()}
    else:
        raise UnreadablePayload(f"protocol {exchange.protocol!r} carries no model payload")
    return Parsed(inputs, outputs, skipped + skipped_out, wide_in or None, wide_out or None)


def _has(document: Any, key: str) -> bool:
    return isinstance(document, dict) and isinstance(document.get(key), list)
