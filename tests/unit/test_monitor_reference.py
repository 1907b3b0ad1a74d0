"""Reading reference files into named columns, bounded in memory whatever their size."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from mlmodel_operator.monitor.reference import ReferenceUnavailable, load_reference


def test_reference_formats(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("a,colour\n1.5,red\n2.5,blue\n")
    assert load_reference(str(tmp_path / "r.csv")) == {"a": [1.5, 2.5], "colour": ["red", "blue"]}
    (tmp_path / "r.jsonl").write_text('{"a": 1, "b": "x"}\n\n{"a": 2, "b": "y"}\n')
    assert load_reference(str(tmp_path / "r.jsonl")) == {"a": [1, 2], "b": ["x", "y"]}
    np.save(tmp_path / "r.npy", np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert load_reference(str(tmp_path / "r.npy")) == {"0": [1.0, 3.0], "1": [2.0, 4.0]}


def test_reference_over_http_and_unavailable(tmp_path: Path) -> None:
    (tmp_path / "ref.csv").write_text("a\n1\n2\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert load_reference(f"{base}/ref.csv") == {"a": [1.0, 2.0]}
        with pytest.raises(ReferenceUnavailable):
            load_reference(f"{base}/missing.csv")
    finally:
        server.shutdown()
    with pytest.raises(ReferenceUnavailable):
        load_reference(str(tmp_path / "nope.npy"))
    (tmp_path / "bad.parquet").write_text("x")
    with pytest.raises(ReferenceUnavailable, match="unknown reference format"):
        load_reference(str(tmp_path / "bad.parquet"))


def test_reference_with_ragged_rows_and_a_column_without_numbers(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("a,b,c\n1,x,3\n2,y\n4,z,6,extra\n")
    assert load_reference(str(tmp_path / "r.csv")) == {
        "a": [1.0, 2.0, 4.0],
        "b": ["x", "y", "z"],
        "c": [3.0, 6.0],
    }


def test_a_large_reference_is_thinned_evenly_as_it_streams(tmp_path: Path) -> None:
    rows = 250_000
    (tmp_path / "big.csv").write_text("i\n" + "\n".join(map(str, range(rows))) + "\n")
    column = load_reference(str(tmp_path / "big.csv"))["i"]
    assert 50_000 <= len(column) <= 100_000
    steps = np.diff(np.asarray(column, dtype=np.float64))
    assert steps.min() == steps.max()  # evenly spread over the whole file
    assert column[-1] >= rows - steps.max()
    np.save(tmp_path / "big.npy", np.arange(2 * rows, dtype=np.float64).reshape(-1, 2))
    columns = load_reference(str(tmp_path / "big.npy"))
    assert len(columns["0"]) <= 100_000 and columns["1"][1] - columns["1"][0] > 2


def test_a_reference_nested_too_deep_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "deep.jsonl").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(ReferenceUnavailable):
        load_reference(str(tmp_path / "deep.jsonl"))
