"""`mlmodel-operator` / `python -m mlmodel_operator`: run the operator."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mlmodel_operator import config, kube, logs, peering, startup


def _fail(message: str) -> int:
    print(f"mlmodel-operator: error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = config.parse_args(argv)
    except ValidationError as err:
        return _fail(config.describe_invalid(err))
    peer_options: dict[str, Any] = {"standalone": True}
    if cfg.peering:
        # Fixed here, before anything reads the configuration, so that kopf and the operator's
        # own resync agree on who this replica is among its peers.
        if cfg.peering_priority is None:
            cfg = cfg.model_copy(update={"peering_priority": peering.random_priority()})
        me = peering.Peering(
            name=cfg.peering,
            identity=peering.own_identity(),
            priority=cfg.peering_priority,
            namespaced=bool(cfg.namespaces),
        )
        peering.set_current(me)
        peer_options = {
            "standalone": False,
            "peering_name": me.name,
            "priority": me.priority,
            "identity": me.identity,
        }
    config.set_current(cfg)
    logs.configure(cfg.log_level)
    try:
        # The one API client of the process, handed to the handlers through kopf's memo.
        client = startup.check(cfg)
    except startup.StartupError as err:
        return _fail(str(err))
    # Registers the handlers, which read the configuration set above when they start.
    importlib.import_module("mlmodel_operator.handlers")
    if cfg.peering:
        log = logging.getLogger(__name__)
        try:
            wanted = cfg.namespaces if cfg.peering_create else None
            for path in peering.current().ensure_objects(client, wanted):
                log.info("created the peering object %s", path)
        except ApiException as err:
            # kopf would wait, paused and silent, for an object that never comes.
            log.error(
                "cannot set up peering %r (are the kopf.dev peering CRDs installed, and may the "
                "operator get and create their objects?): %s",
                cfg.peering,
                kube.describe_error(err),
            )
            return 1
        log.info(
            "peering %r as %s with priority %d: active while no live peer has one as high",
            cfg.peering,
            peering.current().identity,
            cfg.peering_priority,
        )
    kopf.run(
        clusterwide=not cfg.namespaces,
        namespaces=cfg.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{cfg.health_port}/healthz" if cfg.health_port else None,
        memo=kopf.Memo(kube=client),
        **peer_options,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
