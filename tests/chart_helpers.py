"""The pinned helm from the binary cache, for tests that render the chart."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "mlmodel-operator"


@cache
def helm() -> str:
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "build-binaries.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for directory in out.split():
        if (Path(directory) / "helm").exists():
            return str(Path(directory) / "helm")
    pytest.fail("no cached helm: run `make binaries`")
