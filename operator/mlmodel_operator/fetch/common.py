"""What every source shares: the one-line error, choosing the objects to download, the size
check made before any byte is written, and the destination's files."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlmodel_operator.fetch.uri import Location, relative_path

SIZE_FIELD = "spec.storage.size_limit"


class FetchError(Exception):
    """A download that cannot be done; the message is the one line status shows."""


@dataclass(frozen=True)
class Item:
    key: str
    relative: str  # path under the destination
    size: int


def display(uri: str) -> str:
    """The URI as messages show it: without a query, which for a presigned https URL holds a
    signature that must not end up in status or logs."""
    base, sep, _ = uri.partition("?")
    return base + ("?..." if sep else "")


def select(location: Location, listed: Iterable[tuple[str, int]]) -> list[Item]:
    """The objects to download out of (key, size) listed under the location's key: the one
    object named by the key if it exists, else every object below it as a directory."""
    listed = list(listed)
    exact = [(key, size) for key, size in listed if key == location.key and not key.endswith("/")]
    items = [
        Item(key, relative, size)
        for key, size in exact or listed
        if (relative := relative_path(key, location.key)) is not None
    ]
    if not items:
        raise FetchError(f"{location.uri}: NoSuchKey: no object at this key or under it")
    return items


def human(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_size(uri: str, total: int, count: int, limit: int) -> None:
    """Refuse, before downloading, a model that would not fit in the volume."""
    if total > limit:
        raise FetchError(
            f"{display(uri)}: {human(total)} in {count} file(s) is more than the volume's size "
            f"limit of {human(limit)} (raise {SIZE_FIELD})"
        )


def too_large_while_reading(uri: str, limit: int) -> FetchError:
    """For a download whose size was not known in advance (no Content-Length)."""
    return FetchError(
        f"{display(uri)}: more than the volume's size limit of {human(limit)} (raise {SIZE_FIELD})"
    )


def clear(dest: Path) -> None:
    """Empty the destination, so that a retried download never mixes with a failed one's files.
    The directory itself stays: it is the volume's mount point."""
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def target(dest: Path, item: Item) -> Path:
    path = dest / item.relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
