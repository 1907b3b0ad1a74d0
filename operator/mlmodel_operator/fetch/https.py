"""https:// through requests, streamed to disk: one file, named after the URL's last path
segment."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

import requests

from mlmodel_operator.fetch.common import (
    FetchError,
    check_size,
    display,
    too_large_while_reading,
)
from mlmodel_operator.fetch.uri import Location

# The Secret key whose value is sent as the Authorization header (e.g. "Bearer <token>").
AUTHORIZATION_ENV = "HTTP_AUTHORIZATION"
CHUNK = 2**20


def file_name(location: Location) -> str:
    name = unquote(location.key.rsplit("/", 1)[-1])
    return name if name and name not in (".", "..") and "/" not in name else "model"


def fetch(location: Location, dest: Path, limit: int) -> list[int]:
    headers = {}
    if authorization := os.environ.get(AUTHORIZATION_ENV):
        # requests drops it on a redirect to another host.
        headers["Authorization"] = authorization
    path = dest / file_name(location)
    partial = path.with_name(f".{path.name}.part")
    shown = display(location.uri)
    try:
        with requests.get(location.uri, headers=headers, stream=True, timeout=(10, 60)) as answer:
            if answer.status_code >= 400:
                raise FetchError(f"{shown}: HTTP {answer.status_code} {answer.reason}")
            if length := answer.headers.get("Content-Length"):
                check_size(location.uri, int(length), 1, limit)
            written = 0
            with partial.open("wb") as out:
                for chunk in answer.iter_content(CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise too_large_while_reading(location.uri, limit)
                    out.write(chunk)
    except requests.RequestException as err:
        partial.unlink(missing_ok=True)
        # The exception text repeats the URL, query included: name only its kind.
        raise FetchError(f"{shown}: {type(err).__name__}: {_reason(err)}") from err
    except FetchError:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(path)
    return [written]


def _reason(err: requests.RequestException) -> str:
    """The innermost cause ("[Errno 111] Connection refused", "certificate verify failed"),
    which, unlike the outer exceptions, does not repeat the URL."""
    cause: BaseException = err
    while cause.__context__ is not None:
        cause = cause.__context__
    return str(cause) or type(cause).__name__
