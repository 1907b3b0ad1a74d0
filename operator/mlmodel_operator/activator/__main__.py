"""mlmodel-activator: the process the chart runs (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from collections.abc import Sequence

from mlmodel_operator import kube
from mlmodel_operator.activator.decisions import Bounds
from mlmodel_operator.activator.kubeio import ActivatorKube
from mlmodel_operator.activator.server import Activator
from mlmodel_operator.logs import configure as configure_logging


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlmodel-activator", description=__doc__)
    parser.add_argument("--namespaces", default="", help="models' namespaces (empty: all)")
    parser.add_argument("--first-port", type=int, default=20000, help="models' ports from here")
    parser.add_argument("--metrics-port", type=int, default=9090)
    parser.add_argument("--max-held-requests", type=int, default=Bounds.max_requests)
    parser.add_argument("--max-held-bytes", type=int, default=Bounds.max_bytes)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument("--pod-ip", default=os.environ.get("POD_IP", ""))
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    configure_logging(args.log_level)
    if not args.pod_ip:
        raise SystemExit("--pod-ip (or $POD_IP, the downward API's status.podIP) is required")
    io = ActivatorKube(
        kube.configure(),
        [n for n in args.namespaces.split(",") if n],
        os.environ.get("POD_NAME", socket.gethostname()),
    )
    bounds = Bounds(args.max_held_requests, args.max_held_bytes)
    activator = Activator(io, args.pod_ip, args.first_port, bounds, args.interval)
    log = logging.getLogger(__name__)
    log.info("activator on %s, models from port %d", args.pod_ip, args.first_port)
    asyncio.run(activator.run(args.metrics_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
