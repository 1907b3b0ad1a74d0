"""A fixed random projection of wide tensor rows (images, embeddings, long feature vectors) to
PROJECTIONS channels, so that the values past the per-feature budget are watched too: the
sequential charts run on each channel.

Channel 0 is the row's sum over sqrt(width): a shift shared by many values adds up there
coherently (a shift of s in 5% of a 12,288-value row moves it by 5.5 s), where a random
direction sees it with random signs. The other channels are a count sketch, a sparse
Johnson-Lindenstrauss projection: each value goes to one channel with a random sign, and each
channel is the signed sum of its values over sqrt(its count). Any change in the distribution
of a block of values moves the channels they fall in. Against a dense Gaussian matrix it costs
one pass over the row and memory of the row's width (two small arrays) rather than width x
channels floats (19 MB for a 3x224x224 image), with the same distance-keeping guarantee.

The projection is fixed by SEED and the width, so that every pod of a model and every restart
projects alike; the seed is logged when a tensor's projection starts.
"""

from __future__ import annotations

import functools
import math

import numpy as np

PROJECTIONS = 32
SEED = 20_240_601
MAX_WIDTH = 2**22  # values per row projected; wider tensors are left out (and counted)


@functools.lru_cache(maxsize=16)
def sketch(width: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(value order by channel, signs in that order, first position of each channel, scale of
    each channel) of a row of `width` values."""
    rng = np.random.default_rng([seed, width])
    channel = rng.integers(0, PROJECTIONS - 1, size=width)
    signs = rng.choice(np.array([-1.0, 1.0]), size=width)
    order = np.argsort(channel, kind="stable")
    counts = np.bincount(channel, minlength=PROJECTIONS - 1)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    present = counts > 0
    scale = np.zeros(PROJECTIONS - 1)
    scale[present] = 1 / np.sqrt(counts[present])
    return order, signs[order], starts[present], scale


def project(rows: np.ndarray, seed: int = SEED) -> np.ndarray:
    """The projections (rows, PROJECTIONS) of rows (rows, width)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(rows.shape[0], -1)
    width = rows.shape[1]
    order, signs, starts, scale = sketch(width, seed)
    out = np.zeros((rows.shape[0], PROJECTIONS))
    out[:, 0] = rows.sum(axis=1) / math.sqrt(width)
    signed = rows[:, order] * signs
    sums = np.add.reduceat(signed, starts, axis=1)
    present = scale > 0
    out[:, 1:][:, present] = sums * scale[present]
    return out
