"""The drift page, looked at in a real browser: a real sidecar in front of the KServe model
server is fed a stream like its reference, then one whose petal lengths (x[2]) are shifted;
headless Chromium (Debian's chromium-headless-shell, installed by hack/system-packages.sh)
loads GET /drift from the sidecar's metrics port, takes a screenshot and the rendered DOM, and
the drifted feature must be marked in both."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kube_helpers import wait_until
from monitor_procs import MODEL, flowers, metric, model_server, post, start_sidecar, v2_body

pytestmark = pytest.mark.integration

DRIFT_RED = (0xC6, 0x28, 0x28)  # the page's colour of a drifted feature (drift_page.STYLE)


def chromium() -> str:
    binary = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    assert binary, "headless Chromium is not installed (hack/system-packages.sh installs it)"
    return binary


def browse(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={cwd / 'profile'}", *args, url],
        capture_output=True, text=True, cwd=cwd, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def drifted_sidecar(tmp_path: Path) -> Iterator[dict]:
    rng = np.random.default_rng(12)
    reference = tmp_path / "reference.csv"
    rows = ["0,1,2,3"] + [",".join(map(str, row)) for row in flowers(rng, 2000)]
    reference.write_text("\n".join(rows) + "\n")
    drift = {"window_size": 1000, "check_interval_seconds": 5, "reference_uri": str(reference)}
    with model_server(tmp_path) as port:
        server, config = start_sidecar(tmp_path, port, "sidecar-page", drift=drift)
        try:
            path = f"/v2/models/{MODEL}/infer"
            for _ in range(4):  # like the reference
                post(config["listen_port"], path, v2_body(flowers(rng, 50)))
            for _ in range(4):  # petal lengths one centimetre longer
                post(
                    config["listen_port"],
                    path,
                    v2_body(flowers(rng, 50) + np.array([0, 0, 1.0, 0])),
                )
            yield config
        finally:
            server.close()


def page(config: dict) -> str:
    url = f"http://127.0.0.1:{config['metrics_port']}/drift"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        return answer.read().decode()


def test_the_drifted_feature_is_marked_in_the_browser(
    drifted_sidecar: dict, tmp_path: Path
) -> None:
    config = drifted_sidecar
    metrics_port = config["metrics_port"]
    wait_until(
        lambda: metric(metrics_port, "mlmodel_drift_detected", model=MODEL) == 1,
        what="drift to be detected",
    )
    # The page is written after each check: wait for one that saw the drift.
    wait_until(lambda: 'data-drifted="true"' in page(config), what="the page to show the drift")

    url = f"http://127.0.0.1:{metrics_port}/drift"
    dom = browse(url, "--dump-dom", cwd=tmp_path).stdout
    marked = dict(re.findall(r'data-feature="([^"]+)" data-drifted="(true|false)"', dom))
    assert marked["input:x[2]"] == "true"
    # Exactly the features the sidecar's metrics hold drifted are marked, and each watched
    # input feature has its section with both histograms.
    for feature, flag in marked.items():
        direction, name = feature.split(":", 1)
        held = metric(
            metrics_port, "mlmodel_drift_feature_detected", direction=direction, feature=name
        )
        assert (flag == "true") == (held == 1), feature
    assert {f"input:x[{i}]" for i in range(4)} <= set(marked)
    assert dom.count('class="ref"') >= 4 * 20 and dom.count('class="live"') >= 4 * 20
    assert "DRIFTED" in dom

    shot = tmp_path / "drift.png"
    browse(url, f"--screenshot={shot}", "--window-size=900,1400", cwd=tmp_path)
    image = Image.open(shot).convert("RGB")
    assert image.size == (900, 1400)
    red = int(np.all(np.asarray(image) == DRIFT_RED, axis=-1).sum())
    # The drifted feature's border, badge and live bars are drawn in the drift colour.
    assert red > 1000, f"{red} pixels of the drift colour in the screenshot"


def test_the_page_stands_alone() -> None:
    from mlmodel_operator.monitor import drift_page

    html = drift_page.render(None, "iris", "v1")
    assert "No drift check has run yet" in html
    for forbidden in ("<script", "src=", "href=", "@import", "url("):
        assert forbidden not in html
        assert forbidden not in drift_page.STYLE
