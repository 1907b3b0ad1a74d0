"""Sequential drift detection: CUSUM charts checked on every sample, with thresholds set by
bootstrap from the reference so that a whole bank of charts has a chosen false-alarm rate.

A feature becomes channels of standardised values z (a numeric feature: one channel; a
categorical feature: one indicator channel per category; a wide tensor: one channel per
projection). Each channel has charts, CUSUMs S_t = max(0, S_{t-1} + increment_t):

- mean up and mean down: increments +z - k and -z - k, with k = 0.125, best at a 0.25 sigma
  shift (k is half the shift a chart is best at);
- scale: increment z^2 / E_ref[z^2] - 1 - SCALE_K, the log-likelihood ratio of a doubled
  variance against the reference's (for normal data), so it is best at a doubling;
- mean up and mean down again with k = 0.375, best at a 0.75 sigma shift: a chart tuned to a
  small shift is slow on a large one (its threshold is high), and a second pair halves the
  delay on 1 sigma shifts for a few percent more on 0.25 sigma ones.

A batch of samples is run in one vectorised step: S_t = C_t - min(-S_0, min_{s<=t} C_s), with
C the cumulative sum of the increments (the closed form of the recursion).

Calibration. Under no change, a CUSUM is a renewal process: each return to zero starts afresh,
so the false-alarm rate at threshold h is the share of excursions (runs away from zero) whose
maximum passes h, per sample. We resample the reference (CALIBRATION_REPLICATES streams of
CALIBRATION_LENGTH samples), collect the excursion maxima of every chart, and fit their
exponential tail (the shape CUSUM theory gives: P(max > h) ~ C exp(-theta h)) to the largest
TAIL_POINTS of them; each chart's h for any target rate then has a closed form. The bank's
target (one false alarm per `expected_samples_between_false_alarms` samples, all charts
together, with a MARGIN) is shared equally among its charts (a union bound: alarms of charts
on correlated data overlap, so the true rate is lower). Each replicate also gets its own
error of the reference's location and scale, drawn at their sampling spread, because a live
stream differs from its reference by that much and a CUSUM is sensitive to it: a location
error of one standard error alone shortens the run length between false alarms several
times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MEAN_K = 0.125
WIDE_MEAN_K = 0.375
SCALE_K = 2 * math.log(2) - 1  # z^2 - 2 ln 2: the log-likelihood ratio of variance x2, scaled
CLIP = 8.0  # standardised values are clipped here: one wild value cannot raise an alarm alone
CALIBRATION_LENGTH = 4000
CALIBRATION_REPLICATES = 64
TAIL_POINTS = 200
MIN_THRESHOLD = 3.0
MAX_THRESHOLD = 1e4
MGF_ROWS = 4000  # reference rows the decay of the tail is computed from
MAX_CATEGORIES = 16  # a categorical feature's most common reference categories, plus "other"
MAD_TO_SIGMA = 1.4826
# The bank aims at this many times fewer false alarms than asked for: the tail fit from a
# reference of a thousand values errs by tens of percent either way (measured: 1.3 to 1.5 times
# the asked-for rate over 20 features without it).
MARGIN = 2.0


@dataclass(frozen=True)
class Tail:
    """The tail of a chart's excursion maxima under no change, one exponential per replicate:
    `counts[r]` excursions of replicate r passed `level` in `samples` samples in all, and past
    it their number falls by e every 1/`decays[r]`."""

    level: float
    counts: np.ndarray
    decays: np.ndarray
    samples: int

    def rate(self, threshold: float) -> float:
        excess = max(threshold - self.level, 0.0)
        return float((self.counts * np.exp(-self.decays * excess)).sum() / self.samples)

    def threshold(self, target_rate: float) -> float:
        if not self.counts.any():
            return MIN_THRESHOLD
        low, high = self.level, self.level + 1.0
        while self.rate(high) > target_rate and high < MAX_THRESHOLD:
            low, high = high, self.level + 2 * (high - self.level)
        for _ in range(50):  # bisection: the rate falls as the threshold rises
            middle = (low + high) / 2
            low, high = (middle, high) if self.rate(middle) > target_rate else (low, middle)
        return max(MIN_THRESHOLD, min(high, MAX_THRESHOLD))


# --- standardising ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumericScale:
    """Robust location and scale (median, MAD as sigma), then the reference's own mean and
    second moment of the clipped values, so that z has mean 0 and the scale chart's statistic
    mean 1 on the reference whatever its shape."""

    median: float
    sigma: float
    centre: float
    second: float

    @classmethod
    def fit(cls, values: np.ndarray) -> NumericScale:
        median = float(np.median(values))
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
        if not sigma > 0:
            sigma = float(np.std(values)) or 1.0  # over half the values equal: fall back
        z = np.clip((values - median) / sigma, -CLIP, CLIP)
        centre = float(z.mean())
        second = float(((z - centre) ** 2).mean()) or 1.0
        return cls(median, sigma, centre, second)

    def z(self, values: np.ndarray) -> np.ndarray:
        return np.clip((values - self.median) / self.sigma, -CLIP, CLIP) - self.centre


@dataclass(frozen=True)
class CategoryScale:
    """Indicator channels of the reference's most common categories and "other", each
    standardised by its reference share (smoothed so that an unseen category is not infinite)."""

    categories: dict[str, int]  # category -> channel; the last channel is "other"
    shares: np.ndarray

    @classmethod
    def fit(cls, values: list[str]) -> CategoryScale:
        names, counts = np.unique(np.asarray(values, dtype=object), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]
        categories = {str(names[i]): c for c, i in enumerate(order)}
        kept = counts[order].astype(np.float64)
        other = float(counts.sum() - kept.sum())
        shares = np.append(kept, other) + 0.5  # the smoothing: half a count each
        return cls(categories, shares / shares.sum())

    def codes(self, values: list[str]) -> np.ndarray:
        other = len(self.categories)
        return np.fromiter((self.categories.get(v, other) for v in values), np.int64, len(values))

    def z(self, codes: np.ndarray) -> np.ndarray:
        indicators = codes[:, None] == np.arange(self.shares.size)[None, :]
        z = (indicators - self.shares) / np.sqrt(self.shares * (1 - self.shares))
        return np.minimum(z, CLIP)  # one value of a category the reference hardly has


# --- charts -------------------------------------------------------------------------------------


NUMERIC_CHARTS = ["cusum_mean", "cusum_mean", "cusum_scale", "cusum_mean", "cusum_mean"]


def increments(z: np.ndarray, second: np.ndarray | float, charts: int) -> np.ndarray:
    """Per-sample increments (samples, channels, charts) of the first `charts` of mean up,
    mean down, scale, and mean up and down for larger shifts, for standardised values z
    (samples, channels)."""
    parts = [z - MEAN_K, -z - MEAN_K]
    if charts > 2:
        parts += [z * z / second - 1 - SCALE_K, z - WIDE_MEAN_K, -z - WIDE_MEAN_K]
    return np.stack(parts[:charts], axis=-1)


def run(state: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The CUSUM paths (samples, ...) from `state` through the increments `steps`."""
    cumulative = np.cumsum(steps, axis=0)
    floor = np.minimum(np.minimum.accumulate(cumulative, axis=0), -state)
    return cumulative - floor


def excursion_maxima(paths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The maxima of the excursions of CUSUM paths (samples, streams), each stream starting at
    0, and the stream of each."""
    flat = np.ascontiguousarray(paths.T).ravel()
    length = paths.shape[0]
    starts = np.ones(flat.size, dtype=bool)
    starts[1:] = flat[:-1] == 0
    starts[::length] = True
    first = np.flatnonzero(starts)
    return np.maximum.reduceat(flat, first), first // length


def decay_rates(steps: np.ndarray) -> np.ndarray:
    """For each column of i.i.d. increments (rows, columns) with a negative mean, the theta > 0
    with E[exp(theta X)] = 1 (Lundberg's exponent): the maximum of a CUSUM excursion passes h
    with a probability that falls as exp(-theta h) (Siegmund's approximation)."""
    low = np.zeros(steps.shape[1])
    high = np.full(steps.shape[1], 8.0)
    for _ in range(40):
        middle = (low + high) / 2
        above = np.exp(middle * steps).mean(axis=0) > 1
        low, high = np.where(above, low, middle), np.where(above, middle, high)
    return np.maximum(low, 1e-3)  # a mean of 0 or more: as good as no decay


def fit_tail(maxima: np.ndarray, replicate: np.ndarray, decays: np.ndarray, samples: int) -> Tail:
    """The replicates' exponential tails, anchored at the level the TAIL_POINTS-th largest
    excursion reached."""
    positive = np.sort(maxima[maxima > 0])[::-1]
    if positive.size == 0:
        return Tail(0.0, np.zeros(1), np.ones(1), samples)
    level = float(positive[min(TAIL_POINTS, positive.size - 1)])
    counts = np.bincount(replicate[maxima > level], minlength=decays.size).astype(np.float64)
    return Tail(level, counts, decays, samples)


def _resample(
    column: np.ndarray, shape: tuple[int, int], smooth: bool, rng: np.random.Generator
) -> np.ndarray:
    """Draws from the reference values. Smoothed (a normal kernel of Silverman's width, the
    variance kept): a plain bootstrap never goes past the reference's extremes, while live
    values do, and too light a tail would set the thresholds too low."""
    draws = column[rng.integers(0, column.size, size=shape)]
    if not smooth:
        return draws
    spread = float(column.std())
    width = 1.06 * spread * column.size ** (-0.2)
    if width == 0:
        return draws
    centre = float(column.mean())
    jittered = draws - centre + rng.normal(0.0, width, size=shape)
    return centre + jittered / math.sqrt(1 + (width / spread) ** 2)


def calibrate(
    reference_z: np.ndarray,
    second: np.ndarray | float,
    charts: int,
    rng: np.random.Generator,
    reference_size: int | None = None,
    smooth: bool = True,
) -> list[list[Tail]]:
    """Tails [channel][chart] of charts on bootstrap streams of the reference's standardised
    rows `reference_z` (rows, channels); `reference_size` is how many values the location and
    scale were estimated from (their sampling error is added per replicate)."""
    rows, channels = reference_z.shape
    n = reference_size or rows
    length, replicates = CALIBRATION_LENGTH, CALIBRATION_REPLICATES
    spread = reference_z.std(axis=0)
    spread_sq = (reference_z**2).std(axis=0)
    tails: list[list[Tail]] = []
    for channel in range(channels):
        column = reference_z[:, channel]
        # Each replicate's reference is off by a draw of its own sampling error.
        offset = rng.normal(0.0, spread[channel] / math.sqrt(n), replicates)
        second_c = np.asarray(second, dtype=np.float64).reshape(-1)
        base = second_c[channel if second_c.size > 1 else 0]
        rescale = base + rng.normal(0.0, spread_sq[channel] / math.sqrt(n), replicates)
        rescale = np.maximum(rescale, 1e-3 * base)
        draws = _resample(column, (length, replicates), smooth, rng)
        z = np.clip(draws - offset, -CLIP, CLIP)
        steps = increments(z, rescale, charts)  # (length, replicates, charts)
        paths = run(np.zeros((replicates, charts)), steps)
        mgf_rows = _resample(column, (MGF_ROWS, 1), smooth, rng) - offset[None, :]
        exact = increments(np.clip(mgf_rows, -CLIP, CLIP), rescale, charts)
        row = []
        for chart in range(charts):
            maxima, replicate = excursion_maxima(paths[:, :, chart])
            decays = decay_rates(exact[:, :, chart])
            row.append(fit_tail(maxima, replicate, decays, length * replicates))
        tails.append(row)
    return tails


# --- a feature's charts and the bank ------------------------------------------------------------


@dataclass(frozen=True)
class Alarm:
    feature: tuple[str, str]  # (direction, feature name or projection channel)
    detector: str  # cusum_mean, cusum_scale, categorical, projection
    statistic: float
    threshold: float
    at: int  # the sample's position in the batch that raised it


@dataclass
class Charts:
    """One feature's charts: state and thresholds (channels, charts)."""

    names: list[str]  # the detector label of each chart
    tails: list[list[Tail]]
    state: np.ndarray
    threshold: np.ndarray = field(init=False)
    since_alarm: int | None = None  # samples since the last alarm; None: none yet
    last_alarm: Alarm | None = None

    def __post_init__(self) -> None:
        self.threshold = np.full(self.state.shape, np.inf)

    @property
    def size(self) -> int:
        return self.state.size

    def set_rate(self, rate: float) -> None:
        self.threshold = np.array([[t.threshold(rate) for t in row] for row in self.tails])

    def update(self, steps: np.ndarray, key: tuple[str, str]) -> list[Alarm]:
        """Run a batch of increments (samples, channels, charts); an alarm resets its chart."""
        alarms: list[Alarm] = []
        start = 0
        while start < steps.shape[0]:
            paths = run(self.state, steps[start:])
            over = paths > self.threshold
            crossed = over.reshape(over.shape[0], -1).any(axis=1)
            if not crossed.any():
                self.state = paths[-1]
                if self.since_alarm is not None:
                    self.since_alarm += steps.shape[0] - start
                break
            t = int(np.argmax(crossed))
            where = over[t]
            for channel, chart in zip(*np.nonzero(where), strict=True):
                alarms.append(
                    Alarm(
                        key,
                        self.names[chart],
                        float(paths[t, channel, chart]),
                        float(self.threshold[channel, chart]),
                        start + t,
                    )
                )
            self.state = np.where(where, 0.0, paths[t])
            self.since_alarm = 0
            self.last_alarm = alarms[-1]
            start += t + 1
        return alarms


class Bank:
    """All charts of a model, their thresholds set together for the bank's false-alarm rate."""

    def __init__(self, expected_samples_between_false_alarms: int, seed: int = 0) -> None:
        self.arl = expected_samples_between_false_alarms
        self.rng = np.random.default_rng(seed)
        self.charts: dict[tuple[str, str], Charts] = {}

    def add(self, key: tuple[str, str], charts: Charts) -> None:
        """A feature's charts join the bank: every chart's threshold is set anew, since the
        bank's false-alarm rate is shared among more charts."""
        self.charts[key] = charts
        total = sum(c.size for c in self.charts.values())
        for each in self.charts.values():
            each.set_rate(1.0 / (MARGIN * self.arl * total))

    @property
    def size(self) -> int:
        return sum(c.size for c in self.charts.values())


class NumericFeature:
    """A numeric feature (or the projections of a wide tensor: one channel each)."""

    def __init__(self, reference: np.ndarray, rng: np.random.Generator, detector: str = "") -> None:
        reference = reference.reshape(reference.shape[0], -1)
        self.scales = [NumericScale.fit(reference[:, c]) for c in range(reference.shape[1])]
        self.second = np.array([s.second for s in self.scales])
        z = self.z(reference)
        charts = len(NUMERIC_CHARTS)
        tails = calibrate(z, self.second, charts, rng)
        names = [detector or name for name in NUMERIC_CHARTS]
        self.charts = Charts(names, tails, np.zeros((z.shape[1], charts)))

    def z(self, values: np.ndarray) -> np.ndarray:
        values = values.reshape(values.shape[0], -1)
        return np.stack([s.z(values[:, c]) for c, s in enumerate(self.scales)], axis=1)

    def update(self, key: tuple[str, str], values: np.ndarray) -> list[Alarm]:
        steps = increments(self.z(values), self.second, len(NUMERIC_CHARTS))
        return self.charts.update(steps, key)


class CategoricalFeature:
    def __init__(self, reference: list[str], rng: np.random.Generator) -> None:
        self.scale = CategoryScale.fit(reference)
        z = self.scale.z(self.scale.codes(reference))
        # Up charts only: when a category's share falls, another's rises.
        tails = calibrate(z, 1.0, 1, rng, smooth=False)
        self.charts = Charts(["categorical"], tails, np.zeros((z.shape[1], 1)))

    def update(self, key: tuple[str, str], values: list[str]) -> list[Alarm]:
        z = self.scale.z(self.scale.codes(values))
        return self.charts.update(increments(z, 1.0, 1), key)
