"""The generated alerting rules pass promtool, and the drift, drift analyst and error alerts fire on
matching series (promtool's rule unit tests, Debian package prometheus)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlmodel_operator import api
from mlmodel_operator.builders import Owner
from mlmodel_operator.builders.prometheus import build_prometheus_rule

OWNER = Owner(name="fraud", namespace="risk", uid="u")
SERIES = 'namespace="risk",model="fraud"'


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    spec = api.MLModelDeploymentSpec.model_validate(
        {
            "model_type": "xgboost",
            "monitoring": {"drift_detection": "active", "alerts": {"error_ratio": 0.1}},
        }
    )
    rule = build_prometheus_rule(OWNER, spec)
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed (Debian package prometheus; .ci/run installs it)"
    return subprocess.run([binary, *args], capture_output=True, text=True)


def test_rules_pass_promtool_check(rules_file: Path) -> None:
    result = promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_drift_and_error_alerts_fire_on_matching_series(rules_file: Path, tmp_path: Path) -> None:
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # Drift detected from minute 2 on; another model never drifts.
                    {"series": f"mlmodel_drift_detected{{{SERIES}}}", "values": "0 0 1x12"},
                    {
                        "series": 'mlmodel_drift_detected{namespace="risk",model="other"}',
                        "values": "0x14",
                    },
                    # The drift analyst beats until minute 3, then stops.
                    {
                        "series": "mlmodel_drift_worker_heartbeat_timestamp_seconds"
                        f'{{{SERIES},pod="p"}}',
                        "values": "0+60x3 180x26",
                    },
                    # 100 requests a minute, 20 of them failing: a 20% error ratio.
                    {
                        "series": f'mlmodel_requests_total{{{SERIES},status_class="2xx"}}',
                        "values": "0+80x30",
                    },
                    {
                        "series": f'mlmodel_requests_total{{{SERIES},status_class="5xx"}}',
                        "values": "0+20x30",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "MLModelDriftDetected", "exp_alerts": []},
                    {
                        "eval_time": "8m",
                        "alertname": "MLModelDriftDetected",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": {
                                    "summary": "Data drift in model risk/fraud",
                                    "description": "Inputs or outputs differ from the "
                                    "reference; see mlmodel_drift_feature_detected for the "
                                    "features.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "MLModelHighErrorRatio",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical"},
                                "exp_annotations": {
                                    "summary": "Over 10% of requests to model risk/fraud fail"
                                },
                            }
                        ],
                    },
                    {"eval_time": "20m", "alertname": "MLModelHighLatency", "exp_alerts": []},
                    # Stale from minute 5 (over 2 minutes old), firing 5 minutes later.
                    {"eval_time": "8m", "alertname": "MLModelDriftWorkerStalled", "exp_alerts": []},
                    {
                        "eval_time": "11m",
                        "alertname": "MLModelDriftWorkerStalled",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "risk",
                                    "model": "fraud",
                                    "pod": "p",
                                },
                                "exp_annotations": {
                                    "summary": "Drift detection has stopped in a pod of model "
                                    "risk/fraud",
                                    "description": "The drift analyst's heartbeat is over 2 "
                                    "minutes old.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "tests.yml"
    path.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_accuracy_alert_fires_per_version_only_on_enough_labels(tmp_path: Path) -> None:
    spec = api.MLModelDeploymentSpec.model_validate(
        {
            "model_type": "sklearn",
            "monitoring": {
                "ground_truth": {"task": "classification"},
                "alerts": {"min_accuracy": 0.8},
            },
        }
    )
    rules = tmp_path / "rules.yml"
    rules.write_text(
        yaml.safe_dump({"groups": build_prometheus_rule(OWNER, spec)["spec"]["groups"]})
    )
    checked = promtool("check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def series(name: str, version: str, values: str) -> dict[str, str]:
        return {"series": f'{name}{{{SERIES},version="{version}"}}', "values": values}

    labelled, correct = "mlmodel_labelled_predictions_total", "mlmodel_correct_predictions_total"
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # v2: 10 labels a minute, 7 right (70%); v1: 10 a minute, 9 right (90%);
                    # v3: always wrong, but only one label a minute (60 an hour, under 100).
                    series(labelled, "v2", "0+10x150"),
                    series(correct, "v2", "0+7x150"),
                    series(labelled, "v1", "0+10x150"),
                    series(correct, "v1", "0+9x150"),
                    series(labelled, "v3", "0+1x150"),
                    series(correct, "v3", "0x150"),
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "MLModelLowAccuracy", "exp_alerts": []},
                    {
                        "eval_time": "120m",
                        "alertname": "MLModelLowAccuracy",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "version": "v2"},
                                "exp_annotations": {
                                    "summary": "Accuracy of model risk/fraud version v2 below 0.8",
                                    "description": "Share of the last hour's labelled "
                                    "predictions that were right: 70%.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "tests.yml"
    path.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
