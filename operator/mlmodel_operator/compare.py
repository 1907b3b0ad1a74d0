"""Pure: whether a live object is already as desired, so that an apply would change nothing."""

from __future__ import annotations

from typing import Any

from mlmodel_operator import api
from mlmodel_operator.hashing import content_hash

HASH_ANNOTATION = f"{api.GROUP}/applied-hash"


def covers(live: Any, desired: Any) -> bool:
    """Whether every field of `desired` has the same value in `live` (which may hold more: the
    API server's defaults and other managers' fields). Lists must match item by item."""
    if isinstance(desired, dict):
        # The API server drops empty lists and maps, so an empty desired value matches absence.
        return isinstance(live, dict) and all(
            covers(live[key], value) if key in live else value in ([], {})
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(covers(lv, dv) for lv, dv in zip(live, desired, strict=True))
        )
    return live == desired


def with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with an annotation holding the hash of its content: a field dropped from the desired
    object changes the hash, which `covers` alone would not notice."""
    annotations = {**obj["metadata"].get("annotations", {}), HASH_ANNOTATION: content_hash(obj)}
    return {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}
