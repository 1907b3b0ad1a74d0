"""mlmodel-fetch: download a model into a directory, or say in one line why not.

    mlmodel-fetch URI DEST [--size-limit 20Gi] [--endpoint-url URL]

As an init container it writes that line to the termination message as well, where the
operator reads it and reports it in the MLModelDeployment's status.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mlmodel_operator.api import DEFAULT_MODEL_SIZE_LIMIT, parse_memory
from mlmodel_operator.fetch.common import FetchError, clear, display, human
from mlmodel_operator.fetch.uri import Location, parse

TERMINATION_LOG = "/dev/termination-log"
# Kubernetes keeps at most 4096 bytes of a termination message; status needs one line.
MESSAGE_LIMIT = 1024

log = logging.getLogger("mlmodel_operator.fetch")


def _fetch(location: Location, dest: Path, limit: int, endpoint_url: str | None) -> list[int]:
    # Each source's client library is imported only when it is used.
    if location.scheme == "s3":
        from mlmodel_operator.fetch import s3

        return s3.fetch(location, dest, limit, endpoint_url)
    if location.scheme == "gs":
        from mlmodel_operator.fetch import gcs

        return gcs.fetch(location, dest, limit)
    if location.scheme == "hf":
        from mlmodel_operator.fetch import hf

        return hf.fetch(location, dest, limit)
    from mlmodel_operator.fetch import https

    return https.fetch(location, dest, limit)


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 3] + "..."


def report_failure(message: str, termination_log: Path) -> None:
    print(message, file=sys.stderr, flush=True)
    # Outside a container there may be no termination log; stderr has the line.
    with contextlib.suppress(OSError):
        termination_log.write_text(message + "\n")


def run(uri: str, dest: Path, size_limit: str, endpoint_url: str | None) -> str:
    """Download and return a summary; FetchError or ValueError says why not."""
    location = parse(uri)
    limit = parse_memory(size_limit)
    if not dest.is_dir():
        raise FetchError(f"{dest}: no such directory")
    clear(dest)
    start = time.monotonic()
    sizes = _fetch(location, dest, limit, endpoint_url)
    return (
        f"fetched {display(uri)}: {len(sizes)} file(s), {human(sum(sizes))} into {dest} "
        f"in {time.monotonic() - start:.1f}s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlmodel-fetch", description=__doc__.split("\n")[0])
    parser.add_argument(
        "uri", help="s3://bucket/key, gs://bucket/key, https://host/path or hf://org/name[@rev]"
    )
    parser.add_argument("dest", type=Path, help="existing directory to download into")
    parser.add_argument(
        "--size-limit",
        default=DEFAULT_MODEL_SIZE_LIMIT,
        help="refuse a model larger than this (a quantity: 20Gi, 500MB, a byte count)",
    )
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS)")
    parser.add_argument("--termination-log", type=Path, default=Path(TERMINATION_LOG))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        print(run(args.uri, args.dest, args.size_limit, args.endpoint_url), flush=True)
    except (FetchError, ValueError) as err:
        report_failure(one_line(str(err)), args.termination_log)
        return 1
    except Exception as err:
        log.exception("fetching %s failed", display(args.uri))
        report_failure(
            one_line(f"{display(args.uri)}: {type(err).__name__}: {err}"), args.termination_log
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
