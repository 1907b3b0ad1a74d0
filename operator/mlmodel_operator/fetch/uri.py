"""Model URIs the fetcher downloads, parsed. Pure: no I/O, no client library."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# Sources the storage initializer downloads; pvc:// is mounted instead.
FETCHED_SCHEMES = ("s3", "gs", "https", "hf")
# The Hub's rule for an organisation or repository name.
HF_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Location:
    """Where a model lives: a bucket and a key (or key prefix); for https the whole URL; for
    hf a repository id and a revision."""

    uri: str
    scheme: str
    bucket: str  # the host for https, the repository id (org/name) for hf
    key: str  # no leading "/"; empty for a whole bucket; the revision for hf ("" for main)


def is_fetched(uri: str | None) -> bool:
    """Whether the storage initializer downloads this model_uri."""
    return uri is not None and uri.split("://", 1)[0] in FETCHED_SCHEMES


def parse(uri: str) -> Location:
    """s3://bucket/key, gs://bucket/key, https://host/path or hf://org/name[@revision];
    ValueError for anything else."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in FETCHED_SCHEMES:
        raise ValueError(f"{uri}: not a URI the fetcher downloads ({', '.join(FETCHED_SCHEMES)})")
    if scheme == "https":
        parts = urlsplit(uri)
        if not parts.hostname:
            raise ValueError(f"{uri}: no host")
        return Location(uri, scheme, parts.hostname, parts.path.lstrip("/"))
    if scheme == "hf":
        repo, _, revision = rest.partition("@")
        parts = repo.split("/")
        if not 1 <= len(parts) <= 2 or not all(HF_NAME.match(part) for part in parts):
            raise ValueError(f"{uri}: not a Hugging Face repository (hf://<org>/<name>[@<rev>])")
        if "@" in rest and not revision:
            raise ValueError(f"{uri}: empty revision after @")
        return Location(uri, scheme, repo, revision)
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri}: no bucket")
    return Location(uri, scheme, bucket, key)


def relative_path(key: str, prefix: str) -> str | None:
    """Where the object `key` goes under the destination, when `prefix` was asked for: the key
    itself names a single object (its file name), else the part below the prefix "directory".
    None for keys that are not the object or under the prefix, directory markers, and keys whose
    path would leave the destination ("..", empty parts)."""
    if key == prefix and not key.endswith("/"):
        relative = key.rsplit("/", 1)[-1]
    else:
        directory = prefix.rstrip("/") + "/" if prefix.rstrip("/") else ""
        if not key.startswith(directory):
            return None
        relative = key[len(directory) :]
    parts = relative.split("/")
    if not relative or any(part in ("", ".", "..") for part in parts):
        return None
    return relative
