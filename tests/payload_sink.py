"""A real CloudEvents receiver for payload logging's tests and bench: an aiohttp server on a
free port, in a thread of its own, that reads every POST with the CloudEvents SDK (binary mode,
or an application/cloudevents-batch+json array of structured events) and keeps what it got.

It can answer slowly (`delay`) or with another status (`status`), and be stopped and started
again on the same port, for a sink that is down for a while.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from cloudevents.http import CloudEvent, from_http

from procs import free_port

BATCH = "application/cloudevents-batch+json"


@dataclass(frozen=True)
class Post:
    headers: dict[str, str]  # lower-cased names
    events: list[CloudEvent]
    batch: bool


def parse(headers: dict[str, str], body: bytes) -> Post:
    """A POST as a CloudEvents sink reads it, with the SDK."""
    if headers.get("content-type", "").startswith(BATCH):
        structured = {"content-type": "application/cloudevents+json"}
        events = [from_http(structured, json.dumps(doc)) for doc in json.loads(body)]
        return Post(headers, events, batch=True)
    return Post(headers, [from_http(headers, body)], batch=False)


class Sink:
    def __init__(self, port: int | None = None, status: int = 200, delay: float = 0.0) -> None:
        self.port = port or free_port()
        self.status, self.delay = status, delay
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def events(self) -> list[CloudEvent]:
        with self._lock:
            return [event for post in self.posts for event in post.events]

    def by_id(self) -> dict[str, CloudEvent]:
        return {event["id"]: event for event in self.events()}

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        post = parse({k.lower(): v for k, v in request.headers.items()}, body)
        if self.delay:
            await asyncio.sleep(self.delay)
        if 200 <= self.status < 300:
            with self._lock:
                self.posts.append(post)
        return web.Response(status=self.status)

    def start(self) -> Sink:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application(client_max_size=256 * 2**20)
            app.router.add_post("/events", self._receive)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "the sink did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()
