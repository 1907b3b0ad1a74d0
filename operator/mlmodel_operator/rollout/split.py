"""Pure: how a canary step's share of traffic becomes replicas on each side.

With an autoscaler on the stable Deployment, see `beside`.

Without a mesh the Service spreads requests evenly over the ready pods of both Deployments, so
the canary's share is its share of the pods. The total stays the model's replica count, so that a
canary needs no capacity (GPUs) beyond the model's own, with two exceptions: each side keeps at
least one pod until the last step (one replica in all becomes one of each, half the traffic), and
the last step (100) runs every replica on the canary.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    stable: int
    canary: int

    @property
    def canary_share(self) -> int:
        """Percent of the pods, hence of the requests, on the canary."""
        total = self.stable + self.canary
        return round(100 * self.canary / total) if total else 0


def split(total: int, weight: int) -> Split:
    """Replicas of each side at a step of `weight` percent, `total` replicas in all."""
    if weight >= 100:
        return Split(stable=0, canary=total)
    canary = min(max(1, round(total * weight / 100)), max(total - 1, 1))
    return Split(stable=max(1, total - canary), canary=canary)


def beside(stable: int, weight: int) -> Split:
    """Replicas of each side when an autoscaler owns the stable Deployment's count: the canary
    is added beside it, with the share of the pods the step asks for, at least one pod, and at
    most as many as the stable has (half the pods: the stable is never scaled down)."""
    if weight >= 100:
        return Split(stable=stable, canary=max(stable, 1))
    canary = max(1, round(stable * weight / (100 - weight)))
    return Split(stable=stable, canary=min(canary, max(stable, 1)))


def promotion(total: int, stable_ready: int, gpu: bool) -> Split:
    """Replicas while the stable Deployment takes the canary's template: the canary gives up a
    pod for each new stable pod that is ready. With GPUs, where the cluster may have no room for
    an extra pod, the canary gives up one first, and the stable grows one at a time."""
    if gpu:
        stable = min(total, stable_ready + 1)
        return Split(stable=stable, canary=max(0, total - stable))
    return Split(stable=total, canary=max(0, total - stable_ready))
