"""One proxy worker process: the proxy's event loop on the shared port, until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import uvloop
from aiohttp import web

from mlmodel_operator.monitor.handoff import Writer
from mlmodel_operator.monitor.listener import listen
from mlmodel_operator.monitor.proxy import Proxy
from mlmodel_operator.monitor.settings import MonitorSettings


async def serve(
    settings: MonitorSettings,
    handoff: Writer | None,
    analyst_alive: Callable[[], bool],
    stop: asyncio.Event,
) -> None:
    proxy = Proxy(settings, handoff, analyst_alive)
    runner = web.AppRunner(proxy.app(), access_log=None)
    await runner.setup()
    server = await listen(runner, settings, proxy.count_refused)
    try:
        await stop.wait()
    finally:
        server.close()
        await runner.cleanup()


def run_worker(
    settings: MonitorSettings, handoff: Writer | None, analyst_alive: Callable[[], bool]
) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, handoff, analyst_alive, stop)

    # uvloop roughly halves the event loop's share of the latency the proxy adds.
    uvloop.run(main())
    return 0
