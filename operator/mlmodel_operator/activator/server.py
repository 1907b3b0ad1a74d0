"""The activator's event loop: the listeners (one port per model, so that a request names its
model whatever host name the client used), the held requests, and the control loop that reads
the models, points their Services here while they have no ready replica, wakes them, and takes
idle ones to zero."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import defaultdict

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from mlmodel_operator.activator import decisions
from mlmodel_operator.activator.decisions import Bounds, Held, Idleness, ModelView
from mlmodel_operator.activator.kubeio import ActivatorKube, scrape

log = logging.getLogger(__name__)
Key = tuple[str, str]

REQUESTS = Counter(
    "mlmodel_activator_requests",
    "Requests that reached the activator, by what became of them",
    ["namespace", "model", "outcome"],
)
HELD = Gauge("mlmodel_activator_held_requests", "Requests held now", ["namespace", "model"])
WAKES = Counter("mlmodel_activator_wakes", "Wakes from zero", ["namespace", "model"])
COLD_START = Histogram(
    "mlmodel_activator_cold_start_seconds",
    "From the wake to the first ready replica",
    ["namespace", "model"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
TO_ZERO = Counter(
    "mlmodel_activator_scaled_to_zero", "Idle models taken to zero", ["namespace", "model"]
)
# Headers of one hop, not forwarded (RFC 9110 section 7.6.1), and those aiohttp sets itself.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip


def _json_error(status: int, message: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)


class Activator:
    def __init__(
        self, io: ActivatorKube, pod_ip: str, first_port: int, bounds: Bounds, interval: float
    ) -> None:
        self.io, self.pod_ip, self.first_port = io, pod_ip, first_port
        self.bounds, self.interval = bounds, interval
        self.views: dict[Key, ModelView] = {}
        self.ports: dict[Key, int] = {}
        self.by_port: dict[int, Key] = {}
        self.sites: dict[int, web.TCPSite] = {}
        self.sliced: dict[Key, tuple[str, int]] = {}
        self.held: dict[Key, Held] = defaultdict(Held)
        self.held_in_wake: dict[Key, int] = defaultdict(int)
        self.received: dict[Key, int] = defaultdict(int)
        self.idle: dict[Key, Idleness] = {}
        self.wanted: set[Key] = set()
        self.changed = asyncio.Event()
        self.turns: dict[Key, itertools.count[int]] = defaultdict(itertools.count)
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None

    # --- requests ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        port = request.transport.get_extra_info("sockname")[1] if request.transport else None
        key = self.by_port.get(port)
        view = self.views.get(key) if key else None
        if key is None or view is None:
            return _json_error(404, f"no model scales to zero on port {port}")
        self.received[key] += 1
        body = await request.read()
        if view.ready_targets:
            return await self.forward(key, request, body)
        wait = decisions.retry_after(view.cold_start_timeout)
        refusal = decisions.admit(self.held[key], len(body), self.bounds)
        if refusal is not None:
            REQUESTS.labels(*key, "refused").inc()
            return _json_error(503, f"model {key[1]} is waking from zero and {refusal}", wait)
        answer = await self.hold(key, view, len(body))
        if answer is not None:
            return answer
        return await self.forward(key, request, body)

    async def hold(self, key: Key, view: ModelView, size: int) -> web.Response | None:
        """Wait until the model has a ready replica (None), or answer why it will not."""
        self.held[key] = Held(self.held[key].requests + 1, self.held[key].bytes + size)
        self.held_in_wake[key] += 1
        HELD.labels(*key).inc()
        self.wanted.add(key)
        self.changed.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + view.cold_start_timeout
        wait = decisions.retry_after(view.cold_start_timeout)
        try:
            while True:
                current = self.views.get(key)
                if current is None:
                    REQUESTS.labels(*key, "failed").inc()
                    return _json_error(503, f"model {key[1]} no longer scales to zero", wait)
                if current.ready_targets:
                    return None
                if current.failure:
                    REQUESTS.labels(*key, "failed").inc()
                    message = f"model {key[1]} cannot start: {current.failure}"
                    return _json_error(503, message, wait)
                if loop.time() >= deadline:
                    REQUESTS.labels(*key, "timeout").inc()
                    message = (
                        f"model {key[1]} did not wake within cold_start_timeout_seconds "
                        f"({current.cold_start_timeout} s): {current.waiting}"
                    )
                    return _json_error(503, message, wait)
                await asyncio.sleep(0.05)
        finally:
            held = self.held[key]
            self.held[key] = Held(held.requests - 1, held.bytes - size)
            HELD.labels(*key).dec()

    async def forward(self, key: Key, request: web.Request, body: bytes) -> web.StreamResponse:
        targets = self.views[key].ready_targets
        target = targets[next(self.turns[key]) % len(targets)]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        assert self.session is not None
        try:
            async with self.session.request(
                request.method, f"http://{target}{request.rel_url}", headers=headers, data=body
            ) as upstream:
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={
                        k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
                    },
                )
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
        except aiohttp.ClientError as err:
            REQUESTS.labels(*key, "upstream_error").inc()
            return _json_error(502, f"model {key[1]} at {target}: {err}")
        REQUESTS.labels(*key, "forwarded").inc()
        return response

    # --- control loop -----------------------------------------------------------------------

    async def control(self) -> None:
        self.ports = await asyncio.to_thread(self.io.existing_slices)
        self.sliced = {}
        while True:
            try:
                await self.step()
            except Exception:  # a failed round is retried at the next; the loop must not die
                log.exception("activator round failed")
            self.changed.clear()
            interval = (
                self.interval / 4
                if any(h.requests for h in self.held.values())
                else (self.interval)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), interval)

    async def step(self) -> None:
        views = {v.key: v for v in await asyncio.to_thread(self.io.views)}
        for key in set(self.views) - set(views):
            await self.forget(key)
        for key, view in views.items():
            await self.listen(key)
            self.views[key] = view
            await self.route(view)
            if decisions.wakes(view) and (key in self.wanted or self.held[key].requests):
                self.views[key] = view = await self.wake(view)
            self.wanted.discard(key)
            if view.woken_at is not None and view.ready_targets:
                seconds = await asyncio.to_thread(self.io.woken, view, self.held_in_wake[key])
                COLD_START.labels(*key).observe(seconds)
                self.held_in_wake[key] = 0
            await self.follow_traffic(view)

    async def wake(self, view: ModelView) -> ModelView:
        stamp = await asyncio.to_thread(self.io.wake, view)
        WAKES.labels(*view.key).inc()
        return ModelView(**{**view.__dict__, "replicas": 1, "woken_at": stamp})

    async def route(self, view: ModelView) -> None:
        """The model's Service points here exactly while no replica is ready."""
        key = view.key
        if decisions.needs_slice(view):
            wanted = (self.pod_ip, self.ports[key])
            if self.sliced.get(key) != wanted:
                await asyncio.to_thread(self.io.apply_slice, view, *wanted)
                self.sliced[key] = wanted
        elif key in self.sliced or key not in self.idle:
            # Also once at start: a slice an earlier activator left for a model now serving.
            await asyncio.to_thread(self.io.delete_slice, view)
            self.sliced.pop(key, None)

    async def follow_traffic(self, view: ModelView) -> None:
        key, now = view.key, time.monotonic()
        idle = self.idle.setdefault(key, Idleness(last_traffic=now))
        texts = await asyncio.gather(*(asyncio.to_thread(scrape, t) for t in view.metrics_targets))
        counted, in_flight = [float(self.received[key])], 0.0
        for text in texts:
            total, flight = decisions.traffic(text, view.name) if text else (-1.0, 0.0)
            counted.append(total)
            in_flight += flight
        idle.observe(tuple(counted), in_flight, now)
        if None in texts:
            idle.last_traffic = now  # a sidecar that cannot be read may be serving
        if decisions.goes_to_zero(view, idle, self.held[key].requests, now):
            # The Service points here first: requests between the scale-down and the next round
            # reach the activator (which forwards them while a replica is still ready), never a
            # Service without endpoints.
            wanted = (self.pod_ip, self.ports[key])
            await asyncio.to_thread(self.io.apply_slice, view, *wanted)
            self.sliced[key] = wanted
            await asyncio.to_thread(self.io.to_zero, view)
            TO_ZERO.labels(*key).inc()
            idle.last_traffic = now

    async def listen(self, key: Key) -> None:
        port = decisions.assign_port(self.ports, key, self.first_port)
        self.ports[key] = port
        self.by_port[port] = key
        if port not in self.sites:
            assert self.runner is not None
            site = web.TCPSite(self.runner, "0.0.0.0", port)
            await site.start()
            self.sites[port] = site

    async def forget(self, key: Key) -> None:
        view = self.views.pop(key)
        if key in self.sliced:
            await asyncio.to_thread(self.io.delete_slice, view)
            self.sliced.pop(key)
        port = self.ports.pop(key, None)
        if port is not None:
            self.by_port.pop(port, None)
            site = self.sites.pop(port, None)
            if site is not None:
                await site.stop()
        self.idle.pop(key, None)

    # --- process ----------------------------------------------------------------------------

    async def run(self, metrics_port: int) -> None:
        app = web.Application(client_max_size=self.bounds.max_bytes)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        admin = web.Application()
        admin.router.add_get("/metrics", _metrics)
        admin.router.add_get("/healthz", _healthz)
        admin_runner = web.AppRunner(admin, access_log=None)
        await admin_runner.setup()
        await web.TCPSite(admin_runner, "0.0.0.0", metrics_port).start()
        # No total timeout: a model's answer may take long (the sidecar bounds its own).
        timeout = aiohttp.ClientTimeout(total=None, connect=10)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            self.session = session
            await self.control()


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")
