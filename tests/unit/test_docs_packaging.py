"""The configuration table documents every value of the chart, and nothing that is not one."""

from __future__ import annotations

import re
from typing import Any

import yaml

from chart_helpers import CHART, REPO

DOC = REPO / "docs" / "install.md"


def documented_keys() -> set[str]:
    section = DOC.read_text().split("## Chart configuration", 1)[1].split("\n## ", 1)[0]
    keys = set()
    for row in re.findall(r"^\| (`.+?) \|", section, re.M):
        names = re.findall(r"`([^`]+)`", row)
        # "`a.b`, `.c`" documents a.b and a.c
        base = names[0].rsplit(".", 1)[0] if "." in names[0] else ""
        keys |= {base + name if name.startswith(".") else name for name in names}
    return keys


def value_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        path = prefix + key
        paths.add(path)
        if isinstance(value, dict) and value:
            paths |= value_paths(value, path + ".")
    return paths


def test_every_top_level_value_is_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = documented_keys()
    covered = {key.split(".")[0] for key in documented}
    assert set(values) - covered == set()


def test_every_documented_value_exists() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert documented_keys() - value_paths(values) == set()
