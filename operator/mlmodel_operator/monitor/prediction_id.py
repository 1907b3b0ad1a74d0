"""Prediction ids: `<holder>.<own id>`.

The holder part names where the prediction waits for its truth, the pod's IP and the proxy worker
that answered, and when it answered. Feedback can reach any replica behind the model's Service;
the one that receives it reads the holder and sends the entry on to that pod and worker, with no
lookup table shared between replicas. The time lets an id whose prediction has outlived its TTL
be counted late rather than unknown.

The own id is the request's: its `x-request-id` header, else the Open Inference Protocol `id`
the model server echoed in its answer, else a random one. A client that keeps its own ids can
still find them in the prediction id, after the dot.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import struct
import uuid
from dataclasses import dataclass

REQUEST_ID_HEADER = "x-request-id"
PREDICTION_ID_HEADER = "x-prediction-id"
MAX_OWN_ID = 128
# Visible ASCII without the characters that would need quoting in a header list or a URL.
_OWN_ID = re.compile(r"^[A-Za-z0-9._:@~+=/-]{1,128}$")
_TIME = struct.Struct(">BI")  # worker index, Unix seconds


@dataclass(frozen=True)
class Holder:
    """The pod (by IP) and worker that hold a prediction, and when it was made."""

    address: str
    worker: int
    time: int = 0

    def token(self) -> str:
        raw = ipaddress.ip_address(self.address).packed + _TIME.pack(self.worker, self.time)
        return base64.b32encode(raw).decode().rstrip("=").lower()

    def same_place(self, other: Holder) -> bool:
        return self.address == other.address and self.worker == other.worker


def own_id(header: str | None, answered: object = None) -> str | None:
    """The request's own id, when it has one usable in a header: the x-request-id header's,
    else the `id` of an answer (the Open Inference Protocol echoes the request's)."""
    for candidate in (header, answered):
        if isinstance(candidate, str) and _OWN_ID.match(candidate):
            return candidate
    return None


def prediction_id(holder: Holder, own: str | None) -> str:
    return f"{holder.token()}.{own or uuid.uuid4().hex}"


def holder_of(prediction: str) -> Holder | None:
    """The holder a prediction id names, or None when it is not one of ours."""
    token, dot, own = prediction.partition(".")
    if not dot or not own or len(token) > 40:
        return None
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except ValueError:
        return None
    if len(raw) not in (4 + _TIME.size, 16 + _TIME.size):
        return None
    address = str(ipaddress.ip_address(raw[: -_TIME.size]))
    worker, time = _TIME.unpack(raw[-_TIME.size :])
    return Holder(address, worker, time)
