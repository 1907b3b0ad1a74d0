from mlmodel_operator.config import from_env, parse_args


def test_defaults() -> None:
    cfg = from_env({})
    assert cfg.namespaces == [] and cfg.resync_seconds == 300 and cfg.api_qps == 0


def test_environment_then_flags() -> None:
    env = {"MLMODEL_NAMESPACES": "a, b", "MLMODEL_WORKERS": "3", "MLMODEL_LOG_LEVEL": "DEBUG"}
    assert from_env(env).namespaces == ["a", "b"]
    cfg = parse_args(["--workers", "5", "--resync-seconds", "30"], env)
    assert (cfg.workers, cfg.resync_seconds, cfg.log_level) == (5, 30.0, "DEBUG")


def test_logs_are_json_lines() -> None:
    import json
    import logging

    from mlmodel_operator.logs import JsonFormatter

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "it's %s", ("done",), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "it's done" and entry["level"] == "INFO" and entry["logger"] == "x"


def test_network_policy_labels_are_checked_and_parsed() -> None:
    import pytest
    from pydantic import ValidationError

    from mlmodel_operator import config

    cfg = config.parse_args(
        ["--network-policy=true", "--network-policy-clients=team=ml,example.com/tier=gold"], {}
    )
    assert cfg.network_policy is True
    assert config.parse_labels(cfg.network_policy_clients) == {
        "team": "ml",
        "example.com/tier": "gold",
    }
    for bad in ("team", "team=ml,", "two words=x", "=x"):
        with pytest.raises(ValidationError, match="network_policy_clients"):
            config.parse_args([f"--network-policy-clients={bad}"], {})
