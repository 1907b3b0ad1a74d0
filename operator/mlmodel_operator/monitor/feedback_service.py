"""POST /v2/models/<name>/feedback: truth for earlier predictions, taken by any replica.

Each entry goes where its prediction waits, which its id names (prediction_id.py): this worker
labels its own; the others' are sent on, in one request per holder, to the holder's private
feedback port (FEEDBACK_PORT_BASE + its worker index), on loopback for this pod's other workers
and on the pod's IP for other pods. An entry is sent on only to addresses that the model's
headless Service resolves to, never to any address an id may name, and what arrives on a
private port is labelled there and never sent further, so nothing can loop.

Sending on rather than sharing a store: a replica holds only what it answered, with no
coordination on the request path, and feedback, rare next to predictions, pays the one hop.
A holder that is gone (its pod replaced) or does not answer makes its entries `unreachable`,
counted, and the rest of the batch is still labelled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time

import aiohttp
import orjson
from aiohttp import web

from mlmodel_operator.monitor import feedback
from mlmodel_operator.monitor.feedback import BadFeedback, Entry
from mlmodel_operator.monitor.ledger import Ledger
from mlmodel_operator.monitor.settings import MAX_WORKERS, GroundTruthSettings

log = logging.getLogger(__name__)
PEERS_CACHE_SECONDS = 5.0
FORWARD_TIMEOUT_SECONDS = 10.0
PRIVATE_PATH = "/feedback"
LOOPBACK = "127.0.0.1"


class FeedbackService:
    def __init__(
        self, settings: GroundTruthSettings, ledger: Ledger, address: str, worker: int
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.address, self.worker = address, worker
        self._peers: frozenset[str] = frozenset()
        self._peers_at = float("-inf")
        self._session: aiohttp.ClientSession | None = None

    def private_app(self) -> web.Application:
        """The app on this worker's private port: labels what it is sent, sends nothing on."""
        app = web.Application(client_max_size=feedback.MAX_BODY_BYTES)
        app.router.add_post(PRIVATE_PATH, self.label_here)
        return app

    @property
    def private_port(self) -> int:
        return self.settings.feedback_port_base + self.worker

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def receive(self, request: web.Request) -> web.Response:
        try:
            parsed = feedback.parse(await request.read())
        except BadFeedback as err:
            return web.json_response({"error": str(err)}, status=400)
        summary = feedback.empty_summary()
        summary["invalid"] = parsed.invalid
        self.ledger.count({"invalid": parsed.invalid})
        sent_on = []
        for (address, worker), entries in feedback.by_holder(parsed.entries).items():
            if address == self.address and worker == self.worker:
                feedback.add_summary(summary, self.ledger.label(entries))
            else:
                sent_on.append(self._send_on(address, worker, entries))
        for part in await asyncio.gather(*sent_on):
            feedback.add_summary(summary, part)
        return web.json_response(summary)

    async def label_here(self, request: web.Request) -> web.Response:
        try:
            parsed = feedback.parse(await request.read())
        except BadFeedback as err:
            return web.json_response({"error": str(err)}, status=400)
        summary = self.ledger.label(parsed.entries)
        summary["invalid"] += parsed.invalid
        return web.json_response(summary)

    async def _send_on(self, address: str, worker: int, entries: list[Entry]) -> dict[str, int]:
        unreachable = {"unreachable": len(entries)}
        if worker >= MAX_WORKERS:
            self.ledger.count(unreachable)
            return unreachable
        if address == self.address:
            host = LOOPBACK
        elif address in await self._peer_addresses():
            host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        else:
            self.ledger.count(unreachable)
            return unreachable
        url = f"http://{host}:{self.settings.feedback_port_base + worker}{PRIVATE_PATH}"
        try:
            session = self._client()
            async with session.post(url, data=feedback.encode(entries)) as response:
                answer = orjson.loads(await response.read())
                if response.status != 200 or not isinstance(answer, dict):
                    raise ValueError(f"status {response.status}")
                return answer
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            log.warning(
                "feedback for %d prediction(s) held at %s not sent: %s", len(entries), url, err
            )
            self.ledger.count(unreachable)
            return unreachable

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def _peer_addresses(self) -> frozenset[str]:
        """The model's pods, from its headless Service, cached for a few seconds; on a failed
        lookup the last answer stands."""
        host = self.settings.peers_host
        if host is None:
            return frozenset()
        now = time.monotonic()
        if now - self._peers_at < PEERS_CACHE_SECONDS:
            return self._peers
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
            self._peers = frozenset(str(info[4][0]) for info in infos)
        except OSError as err:
            log.warning("cannot resolve the model's pods at %s: %s", host, err)
        self._peers_at = now
        return self._peers
