"""Delivery of payload events to the sink: one POST per batch (or per event in binary mode),
retried with exponential backoff and full jitter up to MAX_ATTEMPTS; a refusal (4xx other than
408 and 429) is not retried. The Authorization header comes from a file (a mounted Secret's
key), read at start and again whenever the file changes, so a rotated token is used without a
restart.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from enum import StrEnum

import aiohttp

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 8.0


class Verdict(StrEnum):
    sent = "sent"
    retry = "retry"
    rejected = "rejected"


def verdict(status: int) -> Verdict:
    """What an answer of the sink means for the events: 2xx taken; 408, 429 and 5xx worth
    another attempt; anything else (3xx, other 4xx) refused for good."""
    if 200 <= status < 300:
        return Verdict.sent
    if status in (408, 429) or status >= 500:
        return Verdict.retry
    return Verdict.rejected


def backoff(
    attempt: int,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = BACKOFF_CAP_SECONDS,
) -> float:
    """Seconds before attempt `attempt + 1` (attempt 0 is the first): full jitter, uniform up to
    base x 2^attempt, capped, so that the workers of many pods do not retry in step; at least
    what the sink asked for in Retry-After, within the cap."""
    wait = rand() * min(cap, base * 2**attempt)
    if retry_after is not None:
        wait = max(wait, min(cap, retry_after))
    return wait


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


class Authorization:
    """The Authorization header's value from a file, read again when the file changes (a
    Secret's mount is updated in place by the kubelet)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._value: str | None = None

    def value(self) -> str | None:
        if self.path is None:
            return None
        try:
            stat = os.stat(self.path)
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if seen != self._seen:
                with open(self.path, encoding="utf-8") as file:
                    self._value = file.read().strip() or None
                self._seen = seen
        except OSError as err:
            if self._seen is not None or self._value is None:
                log.warning("cannot read the payload sink's authorization %s: %s", self.path, err)
            self._seen = None
        return self._value


class Sink:
    """POSTs to the sink's URL, one attempt each."""

    def __init__(self, url: str, authorization: Authorization, timeout: float) -> None:
        self.url = url
        self.authorization = authorization
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def post(self, headers: dict[str, str], body: bytes) -> tuple[int, str | None]:
        """The sink's status and Retry-After; raises OSError, aiohttp.ClientError or
        TimeoutError when it does not answer."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        auth = self.authorization.value()
        if auth is not None:
            headers = {**headers, "Authorization": auth}
        async with self._session.post(
            self.url, data=body, headers=headers, allow_redirects=False
        ) as response:
            await response.read()
            return response.status, response.headers.get("Retry-After")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
