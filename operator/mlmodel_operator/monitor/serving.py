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
    worker: int = 0,
) -> None:
    proxy = Proxy(settings, handoff, analyst_alive, worker)
    runner = web.AppRunner(proxy.app(), access_log=None)
    await runner.setup()
    server = await listen(runner, settings, proxy.count_refused)
    private: web.AppRunner | None = None
    if proxy.feedback is not None:
        # Feedback sent on by the other workers and pods, to this worker alone.
        private = web.AppRunner(proxy.feedback.private_app(), access_log=None)
        await private.setup()
        await web.TCPSite(private, settings.listen_host, proxy.feedback.private_port).start()
    try:
        await stop.wait()
    finally:
        server.close()
        if private is not None:
            await private.cleanup()
        await runner.cleanup()


def run_worker(
    settings: MonitorSettings,
    handoff: Writer | None,
    analyst_alive: Callable[[], bool],
    worker: int = 0,
) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, handoff, analyst_alive, stop, worker)

    # uvloop roughly halves the event loop's share of the latency the proxy adds.
    uvloop.run(main())
    return 0
