"""Loading reference data for drift detection: CSV, NPY or JSON lines, from a path or a URL.

The result is named columns. CSV and JSON lines carry names (a header row, object keys); a
structured NPY array carries field names; a plain 2-D NPY array's columns are named "0", "1",
... and match live tensor columns `x[0]`, `x[1]`, ... by index.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from pathlib import Path

import numpy as np

MAX_ROWS = 100_000  # larger references are thinned evenly; memory stays bounded
FETCH_TIMEOUT_SECONDS = 10


class ReferenceUnavailable(RuntimeError):
    pass


def _fetch(uri: str) -> bytes:
    try:
        if uri.startswith(("http://", "https://")):
            with urllib.request.urlopen(uri, timeout=FETCH_TIMEOUT_SECONDS) as response:
                return response.read()
        return Path(uri).read_bytes()
    except OSError as err:
        raise ReferenceUnavailable(f"cannot read reference {uri}: {err}") from err


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _csv(data: bytes) -> dict[str, list[object]]:
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    if not rows:
        raise ReferenceUnavailable("reference CSV has no rows")
    return {name: [_number_or_text(row[name]) for row in rows] for name in rows[0]}


def _jsonl(data: bytes) -> dict[str, list[object]]:
    columns: dict[str, list[object]] = {}
    for line in data.decode().splitlines():
        if line.strip():
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ReferenceUnavailable("each JSON line must be an object")
            for name, value in record.items():
                columns.setdefault(str(name), []).append(value)
    return columns


def _npy(data: bytes) -> dict[str, list[object]]:
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.dtype.names:
        return {name: array[name].tolist() for name in array.dtype.names}
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    return {str(j): array[:, j].tolist() for j in range(array.shape[1])}


def load_reference(uri: str) -> dict[str, list[object]]:
    data = _fetch(uri)
    suffix = uri.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
    try:
        if suffix == "csv":
            columns = _csv(data)
        elif suffix == "npy":
            columns = _npy(data)
        elif suffix in ("jsonl", "ndjson", "json"):
            columns = _jsonl(data)
        else:
            raise ReferenceUnavailable(f"unknown reference format .{suffix}: use csv, npy or jsonl")
    except (ValueError, UnicodeDecodeError) as err:
        raise ReferenceUnavailable(f"cannot parse reference {uri}: {err}") from err
    return {name: _thin(values) for name, values in columns.items()}


def _thin(values: list[object]) -> list[object]:
    if len(values) <= MAX_ROWS:
        return values
    step = len(values) / MAX_ROWS
    return [values[int(i * step)] for i in range(MAX_ROWS)]
