"""Drift detection quality: ours (the sequential charts and the windowed test together, as the
sidecar's verdict) against river's ADWIN (delta 0.002, one per feature, an alarm when any
fires), on the same streams in the same run.

Streams of 20 features, i.i.d. normal; the first 1,000 samples are the reference (the
sidecar's live baseline, window_size 1000). A change comes at sample CHANGE in feature 0 only
(the hardest case for a bank: 5 of its 100 charts see it): a mean shift, a doubled variance, a
gradual mean drift to +1 sigma over 5,000 samples, or a shift of the frequencies of a
categorical feature (then feature 0 is categorical; ADWIN gets one indicator per category).
Delays are counted from the change; an alarm before it is a false alarm. The no-change
scenario runs 200,000 samples per stream.

Wide inputs: 3x64x64 tensors of i.i.d. normal values, a baseline of 1,000 rows, then at row
WIDE_CHANGE a +0.25 sigma shift in 5% of the values (random places past the first 64, the
feature budget, so that only the projection can see it). ADWIN is not run there: it would take
one detector per value, 12,288 a row.

Also timed: the calibration of one feature's charts, and the analyst's ingest of 0.6 KB
payloads (1x64 floats, as in sidecar_load.py), in payloads per CPU second, against the 1,000
requests per second the sidecar bench sends.

    python bench/drift_quality.py            # the full run (about 20 minutes on one core)
    python bench/drift_quality.py --quick    # a few streams, short
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor import analyst as analyst_module
from mlmodel_operator.monitor.drift import DriftDetector
from mlmodel_operator.monitor.payloads import Exchange
from mlmodel_operator.monitor.sequential import NumericFeature

FEATURES = 20
REFERENCE = 1000
CHANGE = 5000
HORIZON = 5000  # samples after the change in which a detection counts
BATCH = 250  # rows per ingest, about what the analyst takes in one round
NO_CHANGE_LENGTH = 200_000
CATEGORIES_BEFORE = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
CATEGORIES_AFTER = np.array([0.3, 0.3, 0.15, 0.15, 0.1])
TARGET_RATE = 1000  # requests per second the analysis must keep up with
WIDE_SHAPE = (3, 64, 64)
WIDE_CHANGE = 2000
WIDE_SHARE, WIDE_SHIFT = 0.05, 0.25

Stream = tuple[np.ndarray, np.ndarray | None]  # numeric (rows, features), categories of f0


def numeric(shift: float = 0.0, scale: float = 1.0, ramp: int = 0) -> Callable:
    def make(rng: np.random.Generator, length: int) -> Stream:
        data = rng.normal(size=(length, FEATURES))
        after = np.arange(length) >= CHANGE
        if ramp:
            progress = np.clip((np.arange(length) - CHANGE) / ramp, 0, 1)
            data[:, 0] += shift * progress
        else:
            data[after, 0] = data[after, 0] * scale + shift
        return data, None

    return make


def categorical(rng: np.random.Generator, length: int) -> Stream:
    data = rng.normal(size=(length, FEATURES))
    before = rng.choice(5, size=CHANGE, p=CATEGORIES_BEFORE)
    after = rng.choice(5, size=length - CHANGE, p=CATEGORIES_AFTER)
    return data, np.concatenate([before, after])


SCENARIOS: dict[str, tuple[Callable, bool]] = {  # name: (stream maker, has a change)
    "mean +0.25sd": (numeric(0.25), True),
    "mean +0.5sd": (numeric(0.5), True),
    "mean +1sd": (numeric(1.0), True),
    "variance x2": (numeric(scale=np.sqrt(2)), True),
    "categorical shift": (categorical, True),
    "gradual +1sd / 5000": (numeric(1.0, ramp=5000), True),
    "no change": (numeric(), False),
}


def ours(stream: Stream) -> list[int]:
    """Sample positions of the sidecar's alarms: sequential charts on every batch, the windowed
    test every window."""
    data, categories = stream
    settings = DriftSettings(window_size=REFERENCE)
    detector = DriftDetector(settings)
    names = [f"f{j}" for j in range(FEATURES)]
    alarms: list[int] = []
    windowed = False  # the windowed verdict: an alarm when it turns to drifted
    for start in range(0, len(data), BATCH):
        rows = data[start : start + BATCH]
        columns: dict[str, list] = {n: rows[:, j].tolist() for j, n in enumerate(names)}
        if categories is not None:
            columns["f0"] = [f"c{c}" for c in categories[start : start + BATCH]]
        detector.add("input", columns)
        alarms += [start + a.at for a in detector.take_alarms()]
        if detector.due(now=0.0):
            result = detector.check(now=0.0)
            if result.drifted and not windowed:
                alarms.append(start + len(rows) - 1)
            windowed = result.drifted
    return sorted(alarms)


def adwin(stream: Stream, length: int) -> list[int]:
    from river import drift

    data, categories = stream
    columns = [data[:length, j] for j in range(1 if categories is not None else 0, FEATURES)]
    if categories is not None:
        columns += [(categories[:length] == c).astype(float) for c in range(5)]
    detectors = [drift.ADWIN(delta=0.002) for _ in columns]
    alarms = []
    for t in range(length):
        fired = False
        for detector, column in zip(detectors, columns, strict=True):
            detector.update(float(column[t]))
            fired |= detector.drift_detected
        if fired:
            alarms.append(t)
    return alarms


@dataclass
class Outcome:
    detected: int = 0
    streams: int = 0
    delays: list[int] | None = None
    false_alarms: int = 0
    watched: int = 0  # samples in which an alarm is false
    change: int = CHANGE

    def add(self, alarms: list[int], has_change: bool, length: int) -> None:
        self.delays = self.delays or []
        self.streams += 1
        edge = self.change if has_change else length
        self.false_alarms += sum(REFERENCE <= a < edge for a in alarms)
        self.watched += edge - REFERENCE
        after = [a - self.change for a in alarms if self.change <= a < self.change + HORIZON]
        if has_change and after:
            self.detected += 1
            self.delays.append(after[0])

    def row(self, has_change: bool) -> str:
        rate = 1e4 * self.false_alarms / max(self.watched, 1)
        if not has_change:
            return f"{'-':>9} {'-':>7} {'-':>7} {rate:>8.2f}  ({self.streams} streams)"
        if not self.delays:
            return f"{0:>8.0f}% {'-':>7} {'-':>7} {rate:>8.2f}  ({self.streams} streams)"
        delays = np.array(self.delays)
        return (
            f"{100 * self.detected / self.streams:>8.0f}% {np.nanmedian(delays):>7.0f} "
            f"{np.nanpercentile(delays, 90):>7.0f} {rate:>8.2f}  ({self.streams} streams)"
        )


def wide(rng: np.random.Generator, length: int) -> list[int]:
    """Sample positions of the alarms of the detector fed 3x64x64 rows: the first 64 values
    as features, the whole row projected."""
    width = int(np.prod(WIDE_SHAPE))
    detector = DriftDetector(DriftSettings(window_size=REFERENCE))
    places = 64 + rng.choice(width - 64, size=int(WIDE_SHARE * width), replace=False)
    alarms = []
    for start in range(0, length, BATCH):
        rows = rng.normal(size=(min(BATCH, length - start), width))
        after = np.arange(start, start + len(rows)) >= WIDE_CHANGE
        rows[np.ix_(after, places)] += WIDE_SHIFT
        detector.add("input", {f"image[{j}]": rows[:, j].tolist() for j in range(64)})
        detector.add_wide("input", {"image": rows})
        alarms += [start + a.at for a in detector.take_alarms()]
    return sorted(alarms)


def calibration_seconds(reference_size: int, repeats: int = 5) -> float:
    """CPU seconds to calibrate one numeric feature's charts from a reference of this size."""
    rng = np.random.default_rng(4)
    reference = rng.normal(size=reference_size)
    started = time.process_time()
    for _ in range(repeats):
        NumericFeature(reference, rng)
    return (time.process_time() - started) / repeats


def analysis_cost(payloads: int) -> float:
    """Payloads of 1x64 floats (and a one-value answer) the analyst ingests per CPU second,
    with a detector past its baseline and calibrated."""
    rng = np.random.default_rng(3)
    settings = DriftSettings(window_size=REFERENCE)

    def exchange() -> Exchange:
        values = np.round(rng.random((1, 64)), 4).tolist()
        request = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": values}]}
        answer = {"outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [0.5]}]}
        return Exchange("v2", 200, json.dumps(request).encode(), json.dumps(answer).encode())

    analyst = analyst_module.Analyst("bench", settings, [])
    analyst._load_detector()
    warm = [exchange() for _ in range(REFERENCE + 2 * analyst_module.BATCH)]
    for start in range(0, len(warm), analyst_module.BATCH):
        analyst.ingest(*warm[start : start + analyst_module.BATCH])
    batch = [exchange() for _ in range(payloads)]
    started = time.process_time()
    for start in range(0, payloads, analyst_module.BATCH):
        analyst.ingest(*batch[start : start + analyst_module.BATCH])
    return payloads / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 streams, 20,000 with no change")
    parser.add_argument("--streams", type=int, default=30)
    parser.add_argument(
        "--adwin-no-change-streams",
        type=int,
        default=30,
        help="ADWIN's no-change streams (each 200,000 samples x 20 detectors in Python)",
    )
    parser.add_argument("--only", action="append", help="run these scenarios (repeatable)")
    parser.add_argument("--no-cost", action="store_true", help="leave out the analysis cost")
    parser.add_argument("--no-wide", action="store_true", help="leave out the wide inputs")
    args = parser.parse_args()
    streams = 5 if args.quick else args.streams
    no_change_length = 20_000 if args.quick else NO_CHANGE_LENGTH
    adwin_no_change = min(args.adwin_no_change_streams, streams)

    print(f"{'scenario':<20} {'':<6} {'detected':>9} {'median':>7} {'p90':>7} {'FA/10k':>8}")
    for name, (make, has_change) in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        length = CHANGE + HORIZON if has_change else no_change_length
        rng = np.random.default_rng(list(SCENARIOS).index(name))
        ours_outcome, adwin_outcome = Outcome(), Outcome()
        started = time.process_time()
        adwin_seconds = 0.0
        for index in range(streams):
            stream = make(rng, length)
            ours_outcome.add(ours(stream), has_change, length)
            if has_change or index < adwin_no_change:
                begun = time.process_time()
                adwin_outcome.add(adwin(stream, length), has_change, length)
                adwin_seconds += time.process_time() - begun
        ours_seconds = time.process_time() - started - adwin_seconds
        print(f"{name:<20} {'ours':<6} {ours_outcome.row(has_change)}  {ours_seconds:.0f} s CPU")
        print(f"{'':<20} {'ADWIN':<6} {adwin_outcome.row(has_change)}  {adwin_seconds:.0f} s CPU")

    if not args.no_wide:
        length = WIDE_CHANGE + HORIZON
        rng = np.random.default_rng(len(SCENARIOS))
        outcome = Outcome(change=WIDE_CHANGE)
        started = time.process_time()
        for _ in range(streams):
            outcome.add(wide(rng, length), True, length)
        seconds = time.process_time() - started
        print(f"{'3x64x64, 5% +0.25sd':<20} {'ours':<6} {outcome.row(True)}  {seconds:.0f} s CPU")
        print(f"{'':<20} {'ADWIN':<6} not run (one detector per value: 12,288 a row)")
    if args.no_cost:
        return
    for size in (1000, 100_000):
        seconds = calibration_seconds(size)
        print(f"calibration of one numeric feature, reference of {size:,}: {seconds:.3f} s CPU")
    rate = analysis_cost(2000 if args.quick else 20_000)
    print(
        f"analysis of 0.6 KB payloads: {rate:,.0f} per CPU second "
        f"(goal: at least {TARGET_RATE:,} per second on one core)"
    )


if __name__ == "__main__":
    main()
