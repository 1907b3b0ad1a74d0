"""`mlmodel-operator` / `python -m mlmodel_operator`: run the operator."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from mlmodel_operator import config


def main(argv: Sequence[str] | None = None) -> int:
    cfg = config.parse_args(argv)
    config.set_current(cfg)
    logging.basicConfig(
        level=cfg.log_level,
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s",'
        '"message":%(message)r}',
    )
    # Registers the handlers, which read the configuration set above.
    importlib.import_module("mlmodel_operator.handlers")
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port)
    kopf.run(
        clusterwide=not cfg.namespaces,
        namespaces=cfg.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{cfg.health_port}/healthz" if cfg.health_port else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
