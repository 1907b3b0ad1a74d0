"""hf:// from the Hugging Face Hub (or a mirror named by HF_ENDPOINT), through huggingface_hub:
the repository's file list with sizes, the size check, then one file at a time at the exact
commit the list came from, so a push in the meantime cannot mix two revisions.

Weights in safetensors make their copies in other formats redundant: vLLM and transformers load
the safetensors when there are any, so where a repository has them, pickled weights (.bin, .pt,
.pth, .ckpt), other frameworks' weights (.h5, .msgpack, .onnx) and the `original/` checkpoint
folder some repositories add are not downloaded. Every other file (configuration, tokenizer,
chat template, generation settings) is.

The token is HF_TOKEN in the environment, from the Secret named by storage.secret_name.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from mlmodel_operator.fetch.common import FetchError, check_size
from mlmodel_operator.fetch.uri import Location

REDUNDANT_WITH_SAFETENSORS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")
HUB_CACHE = ".cache"  # huggingface_hub's bookkeeping under a local_dir


def wanted(files: dict[str, int]) -> dict[str, int]:
    """The files to download out of the repository's (path -> size)."""
    if not any(path.endswith(".safetensors") for path in files):
        return dict(files)
    return {
        path: size
        for path, size in files.items()
        if not path.endswith(REDUNDANT_WITH_SAFETENSORS)
        and PurePosixPath(path).parts[0] != "original"
    }


def fetch(location: Location, dest: Path, limit: int) -> list[int]:
    repo, revision = location.bucket, location.key or None
    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
        listed = {s.rfilename: s.size or 0 for s in info.siblings or []}
        files = wanted(listed)
        if not files:
            raise FetchError(f"{location.uri}: the repository holds no files")
        check_size(location.uri, sum(files.values()), len(files), limit)
        for path in sorted(files):
            hf_hub_download(repo, path, revision=info.sha, local_dir=dest)
    except GatedRepoError as err:
        raise FetchError(
            f"{location.uri}: gated repository: accept its terms on the Hub with the account "
            "whose HF_TOKEN the Secret in storage.secret_name holds"
        ) from err
    except RepositoryNotFoundError as err:
        raise FetchError(
            f"{location.uri}: repository not found, or private and HF_TOKEN missing or not "
            f"allowed ({_status(err)})"
        ) from err
    except RevisionNotFoundError as err:
        raise FetchError(f"{location.uri}: revision {revision!r} not found") from err
    except EntryNotFoundError as err:
        raise FetchError(f"{location.uri}: a listed file is gone: {err}") from err
    except HfHubHTTPError as err:
        raise FetchError(f"{location.uri}: {_status(err)}: {_first_line(err)}") from err
    finally:
        # huggingface_hub's download metadata: the model server has no use for it.
        shutil.rmtree(dest / HUB_CACHE, ignore_errors=True)
    return [files[path] for path in sorted(files)]


def _status(err: HfHubHTTPError) -> str:
    response = getattr(err, "response", None)
    code = getattr(response, "status_code", None)
    return f"HTTP {code}" if code else type(err).__name__


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
