"""The pinned helm from the binary cache, for tests that render the chart."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from kube_helpers import cached_bin_dirs

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "mlmodel-operator"


@cache
def helm() -> str:
    for directory in cached_bin_dirs():
        if (directory / "helm").exists():
            return str(directory / "helm")
    pytest.fail("no cached helm: run `make binaries`")
