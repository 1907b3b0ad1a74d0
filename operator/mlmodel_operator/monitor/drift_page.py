"""The drift page, `GET /drift` on the sidecar's metrics port: each watched feature's reference
and live histograms, the windowed test's statistic, the detectors that hold it drifted, and its
last alarm. One self-contained HTML document (inline CSS and SVG, no script, no external asset),
so that `kubectl port-forward` and a browser are all it takes to look at a model's drift.

The analyst, which holds the detector, writes a snapshot after each check (`snapshot`, `save`);
the supervisor's metrics server reads the latest (`load`) and renders it (`render`). The file
is in the sidecar's multiprocess directory, a memory-backed emptyDir both processes share;
prometheus_client reads only its *.db files there."""

from __future__ import annotations

import html
import json
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

SNAPSHOT_FILE = "drift-page.json"
BINS = 20  # numeric histograms
TOP_CATEGORIES = 12  # categorical histograms: the most frequent, the rest as one bar

Snapshot = dict[str, Any]


def snapshot_path() -> Path | None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(directory) / SNAPSHOT_FILE if directory else None


# --- the analyst's side -------------------------------------------------------------------------


def numeric_histograms(
    reference: np.ndarray, live: np.ndarray
) -> tuple[list[str], list[float], list[float]]:
    """Both samples' shares over the same BINS bins, spanning the central 99% of both (so that
    one outlier does not squeeze the rest into a bar), the tails counted in the outer bins."""
    both = np.concatenate([reference, live])
    low, high = (float(v) for v in np.quantile(both, [0.005, 0.995]))
    if not high > low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, BINS + 1)

    def shares(values: np.ndarray) -> list[float]:
        counts, _ = np.histogram(np.clip(values, low, high), bins=edges)
        return [float(c) / max(values.size, 1) for c in counts]

    labels = [f"{edges[i]:.4g} to {edges[i + 1]:.4g}" for i in range(BINS)]
    return labels, shares(reference), shares(live)


def categorical_histograms(
    reference: dict[str, int], live: Counter[str]
) -> tuple[list[str], list[float], list[float]]:
    total_ref, total_live = max(sum(reference.values()), 1), max(sum(live.values()), 1)
    ranked = Counter(reference) + live
    top = [c for c, _ in ranked.most_common(TOP_CATEGORIES)]
    labels = list(top)
    ref = [reference.get(c, 0) / total_ref for c in top]
    cur = [live.get(c, 0) / total_live for c in top]
    if len(ranked) > len(top):
        labels.append("(other)")
        ref.append(1 - sum(ref))
        cur.append(1 - sum(cur))
    return labels, ref, cur


def snapshot(
    detector: Any,
    results: list[Any],
    held: set[tuple[str, str, str]],
    last_alarms: dict[tuple[str, str], tuple[Any, float]],
    *,
    model: str,
    version: str,
    checked_at: float,
) -> Snapshot:
    """The page's data from the analyst's detector (drift.DriftDetector), its last check's
    FeatureResults, the (direction, feature, detector) held drifted, and each feature's last
    alarm with its wall-clock time."""
    by_key = {(r.direction, r.feature): r for r in results}
    features = []
    for (direction, name), feature in sorted(detector.features.items()):
        if feature.reference is None:
            continue  # the live baseline is still filling: nothing to compare yet
        if feature.numeric:
            window = np.fromiter(feature.window, dtype=np.float64)
            labels, ref, live = numeric_histograms(feature.reference.sorted_values, window)
        else:
            window_counts = Counter(str(v) for v in feature.window)
            labels, ref, live = categorical_histograms(feature.reference.counts, window_counts)
        result = by_key.get((direction, name))
        detectors = sorted(d for dd, f, d in held if (dd, f) == (direction, name))
        alarm = last_alarms.get((direction, name))
        features.append(
            {
                "direction": direction,
                "feature": name,
                "kind": "numeric" if feature.numeric else "categorical",
                "samples": len(feature.window),
                "method": result.method if result else None,
                "score": _finite(result.score) if result else None,
                "p_value": _finite(result.p_value) if result else None,
                "detectors": detectors,
                "drifted": bool(detectors),
                "bins": labels,
                "reference": ref,
                "live": live,
                "last_alarm": {
                    "detector": alarm[0].detector,
                    "statistic": _finite(alarm[0].statistic),
                    "threshold": _finite(alarm[0].threshold),
                    "time": alarm[1],
                }
                if alarm
                else None,
            }
        )
    return {
        "model": model,
        "version": version,
        "checked_at": checked_at,
        "drifted": any(f["drifted"] for f in features),
        "features": features,
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def save(data: Snapshot, path: Path) -> None:
    """Whole or not at all: the metrics server may read it at any moment."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


# --- the metrics server's side ------------------------------------------------------------------


def load(path: Path | None) -> Snapshot | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _span(bins: list[str]) -> str:
    """The histogram's horizontal extent, in words: numeric bins from the first to the last."""
    if not bins or " to " not in bins[0]:
        return ""
    return html.escape(f"from {bins[0].split(' to ')[0]} to {bins[-1].split(' to ')[-1]}")


def histogram_svg(labels: list[str], reference: list[float], live: list[float]) -> str:
    """Paired bars per bin: the reference's share, then the live window's."""
    width, height, pad = 640, 160, 4
    slot = (width - 2 * pad) / max(len(labels), 1)
    top = max([*reference, *live, 1e-9])
    bars = []
    for i, label in enumerate(labels):
        for j, (share, css) in enumerate(((reference[i], "ref"), (live[i], "live"))):
            h = (height - 2 * pad) * share / top
            x = pad + i * slot + j * slot / 2
            tip = f"{html.escape(label)}: {'reference' if css == 'ref' else 'live'} {share:.1%}"
            bars.append(
                f'<rect class="{css}" x="{x:.1f}" y="{height - pad - h:.1f}" '
                f'width="{max(slot / 2 - 1, 1):.1f}" height="{h:.1f}"><title>{tip}</title></rect>'
            )
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="reference and live histograms">{"".join(bars)}</svg>'
    )


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1b1b1b; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
.verdict { display: inline-block; padding: 2px 8px; border-radius: 4px; font-weight: 600; }
.verdict.ok { background: #e3f2e5; color: #1b5e20; }
.verdict.drifted, .badge { background: #c62828; color: #fff; }
table { border-collapse: collapse; margin: 16px 0; }
th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #ddd; }
tr.drifted td { background: #fdecea; }
section.feature { border: 2px solid #ccc; border-radius: 6px; padding: 12px; margin: 16px 0;
  max-width: 680px; }
section.feature.drifted { border-color: #c62828; }
.badge { padding: 2px 8px; border-radius: 4px; font-weight: 600; margin-left: 8px; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }
.legend span.range { width: auto; height: auto; margin-left: 16px; }
rect.ref, .legend .ref { fill: #9e9e9e; background: #9e9e9e; }
rect.live, .legend .live { fill: #1565c0; background: #1565c0; }
section.feature.drifted rect.live { fill: #c62828; }
section.feature.drifted .legend .live { background: #c62828; }
.muted { color: #666; }
"""


def render(data: Snapshot | None, model: str, version: str) -> str:
    """The whole page; a page that says why there is nothing yet when there is no snapshot."""
    title = f"Drift: {model}" + (f" {version}" if version else "")
    head = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
    )
    if data is None:
        return (
            head + '<p class="muted">No drift check has run yet: drift detection is off, its '
            "reference is not loaded, or too few values have been seen.</p></body></html>"
        )
    features = data["features"]
    verdict = (
        '<span class="verdict drifted">drift detected</span>'
        if data["drifted"]
        else '<span class="verdict ok">no drift</span>'
    )
    parts = [
        head,
        f"<p>{verdict} <span class='muted'>last check {_when(data['checked_at'])}; "
        f"{len(features)} feature(s) watched</span></p>",
        "<table><tr><th>Feature</th><th>Test</th><th>Statistic</th><th>p-value</th>"
        "<th>Window</th><th>Held by</th><th>Last alarm</th></tr>",
    ]
    for f in features:
        name = html.escape(f"{f['direction']}:{f['feature']}")
        alarm = f["last_alarm"]
        alarm_text = (
            f"{html.escape(alarm['detector'])} at {_when(alarm['time'])}" if alarm else "none"
        )
        parts.append(
            f'<tr class="{"drifted" if f["drifted"] else ""}"><td>{name}</td>'
            f"<td>{html.escape(f['method'] or 'n/a')}</td><td>{_number(f['score'])}</td>"
            f"<td>{_number(f['p_value'])}</td><td>{f['samples']}</td>"
            f"<td>{html.escape(', '.join(f['detectors'])) or '-'}</td><td>{alarm_text}</td></tr>"
        )
    parts.append("</table>")
    for f in features:
        name = f"{f['direction']}:{f['feature']}"
        marked = "drifted" if f["drifted"] else ""
        badge = '<span class="badge">DRIFTED</span>' if f["drifted"] else ""
        alarm = f["last_alarm"]
        alarm_text = (
            f"last alarm: {html.escape(alarm['detector'])}, statistic "
            f"{_number(alarm['statistic'])} over threshold {_number(alarm['threshold'])}, "
            f"at {_when(alarm['time'])}"
            if alarm
            else "no alarm yet"
        )
        parts.append(
            f'<section class="feature {marked}" data-feature="{html.escape(name)}" '
            f'data-drifted="{str(bool(f["drifted"])).lower()}">'
            f"<h2>{html.escape(name)}{badge}</h2>"
            f"<p class='muted'>{f['kind']}; {html.escape(f['method'] or 'no test yet')} "
            f"{_number(f['score'])}, p-value {_number(f['p_value'])}; {alarm_text}</p>"
            + histogram_svg(f["bins"], f["reference"], f["live"])
            + '<p class="legend"><span class="ref"></span>reference'
            f'<span class="live"></span>live window ({f["samples"]} values)'
            f'<span class="range muted">{_span(f["bins"])}</span></p></section>'
        )
    parts.append("</body></html>")
    return "".join(parts)
