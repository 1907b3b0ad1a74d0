"""Loading reference data for drift detection: CSV, NPY or JSON lines, from a path or a URL.

The result is named columns. CSV and JSON lines carry names (a header row, object keys); a
structured NPY array carries field names; a plain 2-D NPY array's columns are named "0", "1",
... and match live tensor columns `x[0]`, `x[1]`, ... by index.

Memory is bounded in bytes whatever the file's size: text formats are read line by line and
thinned evenly as they stream (every 2nd row, then every 4th, ...), keeping at most MAX_ROWS
rows, MAX_CELLS values and MAX_KEPT_BYTES of row text; NPY files are memory-mapped and sliced.
At most MAX_READ_BYTES are read; the rest of a larger file is left out (and logged). A CSV row
with missing cells leaves those values out; a field holding a line break is not supported.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

log = logging.getLogger(__name__)
MAX_ROWS = 100_000
MAX_CELLS = 500_000
MAX_KEPT_BYTES = 16 * 2**20
MAX_READ_BYTES = 2 * 2**30
FETCH_TIMEOUT_SECONDS = 10

Columns = dict[str, list[object]]


class ReferenceUnavailable(RuntimeError):
    pass


@contextlib.contextmanager
def _open(uri: str) -> Iterator[IO[bytes]]:
    try:
        if uri.startswith(("http://", "https://")):
            with urllib.request.urlopen(uri, timeout=FETCH_TIMEOUT_SECONDS) as response:
                yield response
        else:
            with Path(uri).open("rb") as file:
                yield file
    except OSError as err:
        raise ReferenceUnavailable(f"cannot read reference {uri}: {err}") from err


class Thinned:
    """An even sample of a stream of rows of unknown length, bounded in rows, cells and bytes:
    keeps every `stride`-th row, and when a bound is reached drops every other kept row and
    doubles the stride."""

    def __init__(self, max_rows: int = MAX_ROWS, max_cells: int = MAX_CELLS) -> None:
        self.max_rows, self.max_cells = max_rows, max_cells
        self.rows: list[tuple[bytes, int]] = []  # (row text, cells)
        self.stride = 1
        self.seen = 0
        self.cells = 0
        self.bytes = 0

    def offer(self, row: bytes, cells: int) -> None:
        index, self.seen = self.seen, self.seen + 1
        if index % self.stride:
            return
        self.rows.append((row, cells))
        self.cells += cells
        self.bytes += len(row)
        while len(self.rows) > 1 and (
            len(self.rows) > self.max_rows
            or self.cells > self.max_cells
            or self.bytes > MAX_KEPT_BYTES
        ):
            self.rows = self.rows[::2]
            self.stride *= 2
            self.cells = sum(c for _, c in self.rows)
            self.bytes = sum(len(r) for r, _ in self.rows)


def _lines(stream: IO[bytes], uri: str) -> Iterator[bytes]:
    """The lines of a stream, up to MAX_READ_BYTES."""
    read = 0
    for line in stream:
        read += len(line)
        if read > MAX_READ_BYTES:
            log.warning("drift: reference %s: only its first %d bytes are used", uri, read)
            return
        yield line


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _csv(stream: IO[bytes], uri: str) -> Columns:
    lines = _lines(stream, uri)
    header = next(csv.reader([next(lines, b"").decode()]), [])
    if not header:
        raise ReferenceUnavailable("reference CSV has no header row")
    width = len(header)
    thinned = Thinned()
    for line in lines:
        if line.strip():
            thinned.offer(line, width)
    if not thinned.rows:
        raise ReferenceUnavailable("reference CSV has no rows")
    columns: Columns = {name: [] for name in header}
    for cells in csv.reader(row.decode() for row, _ in thinned.rows):
        # zip() leaves out the missing cells of a short row and the extra ones of a long one.
        for name, cell in zip(header, cells, strict=False):
            columns[name].append(_number_or_text(cell))
    return columns


def _jsonl(stream: IO[bytes], uri: str) -> Columns:
    thinned = Thinned()
    for line in _lines(stream, uri):
        if line.strip():
            thinned.offer(line, line.count(b":") or 1)  # about the number of keys
    columns: Columns = {}
    for line, _ in thinned.rows:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ReferenceUnavailable("each JSON line must be an object")
        for name, value in record.items():
            columns.setdefault(str(name), []).append(value)
    return columns


def _npy(path: str) -> Columns:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.ndim == 1 and not array.dtype.names:
        array = array.reshape(-1, 1)
    if array.ndim == 0 or len(array) == 0:
        raise ReferenceUnavailable("reference NPY has no rows")
    width = len(array.dtype.names) if array.dtype.names else int(np.prod(array.shape[1:]))
    rows = min(MAX_ROWS, max(1, MAX_CELLS // max(width, 1)))
    step = -(-len(array) // rows)  # ceiling: at most `rows` rows, evenly spread
    sample = np.array(array[::step])
    if sample.dtype.names:
        return {name: sample[name].tolist() for name in sample.dtype.names}
    sample = sample.reshape(len(sample), -1)
    return {str(j): sample[:, j].tolist() for j in range(sample.shape[1])}


def _local_npy(uri: str, stream: IO[bytes]) -> Columns:
    if not uri.startswith(("http://", "https://")):
        return _npy(uri)
    with tempfile.NamedTemporaryFile(suffix=".npy") as copy:
        shutil.copyfileobj(_Capped(stream), copy)
        copy.flush()
        return _npy(copy.name)


class _Capped(io.RawIOBase):
    """A stream that refuses to go on past MAX_READ_BYTES (an NPY file cannot be cut short)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.read_bytes = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size > 0 else 2**20)
        self.read_bytes += len(data)
        if self.read_bytes > MAX_READ_BYTES:
            raise ReferenceUnavailable(f"reference NPY is over {MAX_READ_BYTES} bytes")
        return data


def load_reference(uri: str) -> Columns:
    suffix = uri.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
    readers = {"csv": _csv, "jsonl": _jsonl, "ndjson": _jsonl, "json": _jsonl}
    if suffix not in readers and suffix != "npy":
        raise ReferenceUnavailable(f"unknown reference format .{suffix}: use csv, npy or jsonl")
    try:
        with _open(uri) as stream:
            if suffix == "npy":
                return _local_npy(uri, stream)
            return readers[suffix](stream, uri)
    except (ValueError, UnicodeDecodeError, RecursionError, csv.Error) as err:
        raise ReferenceUnavailable(f"cannot parse reference {uri}: {err}") from err
    except OSError as err:
        raise ReferenceUnavailable(f"cannot read reference {uri}: {err}") from err
