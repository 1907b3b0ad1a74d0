"""Start-up checks: every failure a person can fix (a port in use, an unreadable kubeconfig, an
unreachable API server, a missing CRD, a bad runtime catalog) becomes one line that says what to
change, instead of a traceback from deep inside kopf or a client library."""

from __future__ import annotations

import logging
import os
import socket

import yaml
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server
from urllib3.exceptions import HTTPError

from mlmodel_operator import api, kube
from mlmodel_operator.config import OperatorConfig
from mlmodel_operator.runtimes import CatalogError, load_catalog


class StartupError(Exception):
    """The operator cannot start; the message is the one line to print."""


def _port_in_use(port: int, what: str, flag: str, err: OSError) -> StartupError:
    return StartupError(
        f"cannot listen on port {port} for {what}: {err.strerror or err} "
        f"(choose another with {flag}, or 0 to turn it off)"
    )


def check_free_port(port: int, what: str, flag: str) -> None:
    """Whether a server kopf starts later (the health endpoint) will be able to listen."""
    if not port:
        return
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as err:
            raise _port_in_use(port, what, flag, err) from err


def start_metrics(port: int) -> None:
    if not port:
        return
    try:
        start_http_server(port)
    except OSError as err:
        raise _port_in_use(port, "metrics", "--metrics-port", err) from err


def connect(cfg: OperatorConfig) -> kube.Kube:
    """The API client, once the API server has answered and serves the CRD."""
    source = os.environ.get("KUBECONFIG") or "~/.kube/config or the in-cluster ServiceAccount"
    try:
        client = kube.configure(cfg.api_qps, cfg.api_burst)
    except (kube_config.ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as err:
        message = f"cannot load the Kubernetes client configuration ({source}): {err}"
        raise StartupError(message) from err
    host = client.api_client.configuration.host
    group_version = f"{api.GROUP}/{api.VERSION}"
    # urllib3 logs a warning for each retry of a refused connection: the one line below says it.
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    level = urllib3_log.level
    urllib3_log.setLevel(logging.ERROR)
    try:
        served = client.request("GET", f"/apis/{group_version}")
    except ApiException as err:
        if err.status == 404:
            raise StartupError(
                f"the API server at {host} does not serve {group_version}: install the CRD "
                "(kubectl apply --server-side -f crds/)"
            ) from err
        raise StartupError(
            f"the API server at {host} refused the first request: {kube.describe_error(err)}"
        ) from err
    except (HTTPError, OSError) as err:
        # MaxRetryError's own text repeats the URL; its reason is the last attempt's failure.
        reason = getattr(err, "reason", None) or err
        raise StartupError(f"cannot reach the API server at {host}: {reason}") from err
    finally:
        urllib3_log.setLevel(level)
    if not any(r.get("name") == api.PLURAL for r in served.get("resources", [])):
        raise StartupError(
            f"the API server at {host} does not serve {api.PLURAL}.{group_version}: install the "
            "CRD (kubectl apply --server-side -f crds/)"
        )
    return client


def check(cfg: OperatorConfig) -> kube.Kube:
    """Everything that can be checked before kopf starts; the connected client."""
    try:
        load_catalog(cfg.runtime_catalog)
    except CatalogError as err:
        raise StartupError(f"{err} (--runtime-catalog)") from err
    check_free_port(cfg.health_port, "the health endpoint", "--health-port")
    start_metrics(cfg.metrics_port)
    return connect(cfg)
