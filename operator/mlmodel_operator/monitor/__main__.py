"""`mlmodel-monitor`: the sidecar. Reads its configuration file, then runs its processes (the
proxy workers and, with drift detection on, the analyst) until stopped."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlmodel_operator import logs
from mlmodel_operator.monitor.settings import CONFIG_DIR, CONFIG_FILE, MonitorSettings

log = logging.getLogger("mlmodel_operator.monitor")
# Where the processes' metric files live (prometheus_client's own variable). The operator sets
# it to an emptyDir in the pod; unset, a temporary directory is made and removed on exit.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mlmodel-monitor",
        description="Reverse proxy in front of a model server: Prometheus metrics and drift.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(CONFIG_DIR) / CONFIG_FILE,
        help="JSON configuration written by the operator (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def metrics_directory() -> tuple[Path, bool]:
    """The metric files' directory, emptied of an earlier run's files (a restarted container
    keeps its emptyDir), and whether it was made here."""
    given = os.environ.get(MULTIPROC_ENV)
    if not given:
        made = Path(tempfile.mkdtemp(prefix="mlmodel-monitor-metrics-"))
        os.environ[MULTIPROC_ENV] = str(made)
        return made, True
    directory = Path(given)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory, False


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level)
    try:
        settings = MonitorSettings.load(args.config.read_text(), os.environ)
    except (OSError, ValueError) as err:  # a missing file, or one that is not valid settings
        log.error("cannot read the configuration %s: %s", args.config, err)
        return 2
    try:
        directory, made = metrics_directory()
    except OSError as err:
        log.error("cannot prepare the metrics directory (%s): %s", MULTIPROC_ENV, err)
        return 2
    # prometheus_client chooses between one process and many when it is first imported.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    from mlmodel_operator.monitor.supervisor import supervise

    try:
        return supervise(settings)
    finally:
        if made:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
