"""s3:// from AWS or any S3-compatible endpoint, through boto3 (AWS's own SDK: request signing,
the credential chain with web identity, retries and multipart downloads, none of it written
here)."""

from __future__ import annotations

from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mlmodel_operator.fetch.common import FetchError, check_size, select, target
from mlmodel_operator.fetch.uri import Location

# Bounded memory: at most 4 parts of 16 MiB in flight.
TRANSFER = TransferConfig(multipart_chunksize=16 * 2**20, max_concurrency=4)


def _client(endpoint_url: str | None):  # type: ignore[no-untyped-def]
    session = boto3.session.Session()
    config = Config(
        retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60
    )
    if endpoint_url:
        # S3-compatible servers (MinIO, Ceph, ...) answer path-style requests whatever their
        # DNS set-up; virtual-hosted buckets need a wildcard name.
        config = config.merge(Config(s3={"addressing_style": "path"}))
    if session.get_credentials() is None:
        # No credentials anywhere: a public bucket, read with unsigned requests.
        config = config.merge(Config(signature_version=UNSIGNED))
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def _listing(s3, location: Location) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    """(key, size) of the objects under the location's key. Credentials that may read an object
    but not list its bucket (s3:GetObject without s3:ListBucket, a common least-privilege
    policy) still fetch a URI that names one object."""
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=location.key
        )
        return [(o["Key"], o["Size"]) for page in pages for o in page.get("Contents", [])]
    except ClientError as err:
        if _code(err) != "AccessDenied" or not location.key or location.key.endswith("/"):
            raise
        try:
            head = s3.head_object(Bucket=location.bucket, Key=location.key)
        except ClientError:
            raise err from None  # the listing's refusal says more than a bare 403 or 404
        return [(location.key, head["ContentLength"])]


def _code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code") or "Error"


def fetch(location: Location, dest: Path, limit: int, endpoint_url: str | None) -> list[int]:
    """Download the object or prefix into dest; the sizes of the files written."""
    try:
        s3 = _client(endpoint_url)
        items = select(location, _listing(s3, location))
        check_size(location.uri, sum(i.size for i in items), len(items), limit)
        for item in items:
            s3.download_file(location.bucket, item.key, str(target(dest, item)), Config=TRANSFER)
    except ClientError as err:
        message = err.response.get("Error", {}).get("Message")
        detail = f"{_code(err)}: {message}" if message else _code(err)
        raise FetchError(f"{location.uri}: {detail}") from err
    except BotoCoreError as err:
        raise FetchError(f"{location.uri}: {err}") from err
    return [i.size for i in items]
