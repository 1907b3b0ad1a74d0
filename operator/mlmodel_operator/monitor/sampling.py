"""Which payloads the analyst gets when it cannot keep up: an even share of them.

The proxy never waits for the analyst. As the hand-off fills, a falling share of payloads is
kept, spaced evenly (one in every 1/share, by a running credit rather than at random or in
bursts), so a drift window still represents the traffic of its time; the rest are counted as
dropped with the reason `sampled`. The share is a pure function of how full the hand-off is:
the analyst's speed and the traffic settle it where the two meet.
"""

from __future__ import annotations

from dataclasses import dataclass

KEEP_ALL_BELOW = 0.25  # fill fraction under which every payload is kept
KEEP_NONE_ABOVE = 0.75  # fill fraction at which only MIN_SHARE is kept
MIN_SHARE = 1 / 256


def keep_share(fill: float) -> float:
    """The share of payloads to keep at a given fill fraction of the hand-off (0..1)."""
    if fill <= KEEP_ALL_BELOW:
        return 1.0
    if fill >= KEEP_NONE_ABOVE:
        return MIN_SHARE
    share = (KEEP_NONE_ABOVE - fill) / (KEEP_NONE_ABOVE - KEEP_ALL_BELOW)
    return max(MIN_SHARE, share)


@dataclass
class EvenSampler:
    """Keeps `share` of the payloads offered, evenly spaced."""

    credit: float = 0.0

    def keep(self, fill: float) -> bool:
        share = keep_share(fill)
        if share >= 1.0:
            self.credit = 0.0
            return True
        self.credit += share
        if self.credit >= 1.0:
            self.credit -= 1.0
            return True
        return False
