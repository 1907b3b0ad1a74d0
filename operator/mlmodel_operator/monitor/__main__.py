"""`mlmodel-monitor`: the sidecar. Reads its configuration file and serves the proxy and the
metrics endpoint until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop
from aiohttp import web
from prometheus_client import start_http_server

from mlmodel_operator import logs
from mlmodel_operator.monitor.listener import listen
from mlmodel_operator.monitor.proxy import Proxy
from mlmodel_operator.monitor.settings import CONFIG_DIR, CONFIG_FILE, MonitorSettings
from mlmodel_operator.monitor.worker import DriftWorker

log = logging.getLogger("mlmodel_operator.monitor")


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


async def serve(settings: MonitorSettings, stop: asyncio.Event) -> None:
    drift = None
    if settings.drift is not None:
        drift = DriftWorker(
            settings.model_name,
            settings.drift,
            settings.queue_size,
            settings.queue_bytes,
            version=settings.model_version,
        )
        drift.start()
    proxy = Proxy(settings, drift)
    runner = web.AppRunner(proxy.app(), access_log=None)
    await runner.setup()
    server = await listen(runner, settings, proxy.count_refused)
    log.info("proxying :%d -> %s", settings.listen_port, settings.upstream)
    try:
        await stop.wait()
    finally:
        server.close()
        await runner.cleanup()
        if drift is not None:
            drift.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level)
    try:
        settings = MonitorSettings.load(args.config.read_text(), os.environ)
    except (OSError, ValueError) as err:  # a missing file, or one that is not valid settings
        log.error("cannot read the configuration %s: %s", args.config, err)
        return 2
    start_http_server(settings.metrics_port, addr=settings.listen_host)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    # uvloop roughly halves the event loop's share of the latency the proxy adds.
    uvloop.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
