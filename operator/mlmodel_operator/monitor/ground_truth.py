"""Reading a prediction out of an answer, and scoring it against the truth sent later.

A prediction is one value per row of the answer's batch:
- classification, a class as text: the text of a BYTES output (a label); the index of the
  largest value when a row holds several numbers (argmax of scores, first index on ties); the
  number itself when a row holds one (a class id, 1.0 read as "1").
- regression, a number: a row must hold exactly one.

The output is the Open Inference Protocol output named by `output`, or the first one; for the
v1 protocol, `predictions` (rows that are scalars, lists, or objects read at key `output`).

The truth of a class compares as text, with integral numbers written as integers, so a truth of
1, 1.0 or "1" matches a predicted class id 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlmodel_operator.monitor.pending import Row, Rows

MAX_ROWS = 4096  # rows of one answer kept for their truth; a larger batch is not labelled


class Unreadable(ValueError):
    pass


@dataclass(frozen=True)
class Answer:
    """What an answer says: the request id it echoes, and its prediction rows (None with the
    reason when they cannot be read)."""

    id: object = None
    rows: Rows | None = None
    problem: str | None = None


def parse_answer(body: bytes | bytearray) -> dict[str, Any] | None:
    """The answer's JSON object; None when it is not one."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def read_rows(
    document: dict[str, Any] | None, protocol: str, task: str, output: str | None
) -> Answer:
    if document is None:
        return Answer(problem="unreadable")
    answered = document.get("id")
    try:
        if protocol == "v2":
            rows = _v2_rows(document, task, output)
        elif protocol == "v1":
            rows = _v1_rows(document, task, output)
        else:
            raise Unreadable(f"no prediction is read from {protocol} answers")
    except Unreadable:
        return Answer(answered, problem="unreadable")
    if len(rows) > MAX_ROWS:
        return Answer(answered, problem="too_large")
    return Answer(answered, rows)


def read_answer(body: bytes | bytearray, protocol: str, task: str, output: str | None) -> Answer:
    return read_rows(parse_answer(body), protocol, task, output)


def _v2_rows(document: dict[str, Any], task: str, output: str | None) -> Rows:
    outputs = document.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise Unreadable("no outputs")
    if output is None:
        tensor = outputs[0]
    else:
        tensor = next((t for t in outputs if isinstance(t, dict) and t.get("name") == output), None)
    if not isinstance(tensor, dict):
        raise Unreadable(f"no output {output!r}")
    shape, data = tensor.get("shape"), tensor.get("data")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise Unreadable("shape")
    batch = shape[0] if shape else 1
    if tensor.get("datatype") != "BYTES":
        numbers = _numeric_rows(data, batch)
        if numbers is not None:
            return _rows_of_numbers(numbers, task)
    flat = _flat(data)
    if batch == 0 or len(flat) % batch:
        raise Unreadable("data does not fill the shape")
    width = len(flat) // batch
    return tuple(_row(flat[i * width : (i + 1) * width], task) for i in range(batch))


def _numeric_rows(data: object, batch: int) -> np.ndarray | None:
    """Numeric tensor data as a (batch, width) array, read by numpy (scores of a large batch
    are thousands of values); None when it is not all numbers."""
    if not isinstance(data, list) or batch == 0:
        return None
    try:
        values = np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if values.size == 0 or values.size % batch:
        raise Unreadable("data does not fill the shape")
    if not np.isfinite(values).all():
        raise Unreadable("not a finite number")
    return values.reshape(batch, -1)


def _rows_of_numbers(values: np.ndarray, task: str) -> Rows:
    if task == "regression":
        if values.shape[1] != 1:
            raise Unreadable("a regression row holds one number")
        return tuple(values[:, 0].tolist())
    if values.shape[1] == 1:
        return tuple(class_text(v) for v in values[:, 0].tolist())
    return tuple(str(i) for i in values.argmax(axis=1).tolist())


def _v1_rows(document: dict[str, Any], task: str, output: str | None) -> Rows:
    predictions = document.get("predictions")
    if not isinstance(predictions, list) or not predictions:
        raise Unreadable("no predictions")
    rows: list[Row] = []
    for row in predictions:
        if isinstance(row, dict):
            if output is None or output not in row:
                raise Unreadable(f"no key {output!r} in a prediction")
            row = row[output]
        rows.append(_row(_flat(row), task))
    return tuple(rows)


def _flat(data: object) -> list[Any]:
    """Nested lists flattened in order, without recursion."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Unreadable("not a finite number")
    return float(value)


def _row(values: Sequence[Any], task: str) -> Row:
    if not values:
        raise Unreadable("empty row")
    if task == "regression":
        if len(values) != 1:
            raise Unreadable("a regression row holds one number")
        return _number(values[0])
    if len(values) == 1:
        return class_text(values[0])
    scores = [_number(v) for v in values]
    return str(scores.index(max(scores)))


def class_text(value: object) -> str:
    """A class as text: integral numbers as integers, so 1, 1.0 and "1" are one class."""
    if isinstance(value, str):
        return value
    number = _number(value)
    return str(int(number)) if number.is_integer() else repr(number)


@dataclass
class Score:
    labelled: int = 0
    correct: int = 0
    absolute_error: float = 0.0
    squared_error: float = 0.0


def score(task: str, rows: Rows, truth: object) -> Score:
    """Predicted rows against their truth: one value for a single row, else a list with one per
    row. Raises Unreadable when the truth does not fit the rows."""
    truths = truth if isinstance(truth, list) else [truth]
    if len(truths) != len(rows):
        raise Unreadable(f"{len(truths)} truth value(s) for {len(rows)} predicted row(s)")
    result = Score(labelled=len(rows))
    for predicted, actual in zip(rows, truths, strict=True):
        if task == "regression":
            error = abs(float(predicted) - _number(actual))
            result.absolute_error += error
            result.squared_error += error * error
        else:
            result.correct += class_text(actual) == predicted
    return result
