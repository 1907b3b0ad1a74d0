"""gs:// through google-cloud-storage (Google's own client: its credential discovery, retries
and checksummed downloads; STORAGE_EMULATOR_HOST points it at a GCS-compatible server)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import google.auth
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from requests import RequestException

from mlmodel_operator.fetch.common import FetchError, check_size, select, target
from mlmodel_operator.fetch.uri import Location

# The Secret key holding a service-account key or an external-account (workload identity
# federation) configuration, as JSON.
CREDENTIALS_ENV = "GOOGLE_CREDENTIALS_JSON"
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_only"]


def _client() -> storage.Client:
    if info := os.environ.get(CREDENTIALS_ENV):
        try:
            parsed = json.loads(info)
        except ValueError as err:
            raise auth_exceptions.MalformedError(f"{CREDENTIALS_ENV} is not JSON: {err}") from err
        credentials, project = google.auth.load_credentials_from_dict(parsed, scopes=SCOPES)
        return storage.Client(project=project, credentials=credentials)
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client()  # anonymous, as emulators expect
    try:
        credentials, project = google.auth.default(scopes=SCOPES)
    except auth_exceptions.DefaultCredentialsError:
        return storage.Client.create_anonymous_client()  # a public bucket
    return storage.Client(project=project, credentials=credentials)


def fetch(location: Location, dest: Path, limit: int) -> list[int]:
    """Download the object or prefix into dest; the sizes of the files written."""
    try:
        client = _client()
        blobs = {b.name: b for b in client.list_blobs(location.bucket, prefix=location.key)}
        items = select(location, ((name, b.size or 0) for name, b in blobs.items()))
        check_size(location.uri, sum(i.size for i in items), len(items), limit)
        for item in items:
            blobs[item.key].download_to_filename(str(target(dest, item)))
    except api_exceptions.GoogleAPICallError as err:
        raise FetchError(f"{location.uri}: {type(err).__name__}: {err.message}") from err
    except auth_exceptions.GoogleAuthError as err:
        raise FetchError(f"{location.uri}: credentials: {_auth_reason(err)}") from err
    except RequestException as err:
        raise FetchError(f"{location.uri}: {type(err).__name__}: {err}") from err
    return [i.size for i in items]


def _auth_reason(err: auth_exceptions.GoogleAuthError) -> str:
    """google-auth's errors carry (message, cause) tuples; as one sentence."""
    return ": ".join(str(arg) for arg in err.args) or type(err).__name__
