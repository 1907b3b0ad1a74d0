"""`kubectl mlmd`, installed as the console script `kubectl-mlmd` (kubectl finds plugins on PATH).

    kubectl mlmd get NAME [-n NS] [-w]           the model, its Deployments and pods as a tree
    kubectl mlmd promote|abort|retry NAME        act on the canary through the rollout annotation
    kubectl mlmd logs NAME [-f] [--sidecar]      the model server's logs across the model's pods

The kubeconfig is read as kubectl reads it: --kubeconfig, else $KUBECONFIG, else ~/.kube/config;
--context picks a context. This module is the plugin's only talk with the API server.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mlmodel_operator import api
from mlmodel_operator.builders.deployment import MODEL_CONTAINER
from mlmodel_operator.builders.meta import Owner, selector_string
from mlmodel_operator.builders.monitor import SIDECAR_NAME
from mlmodel_operator.kubectl.tree import Model, render
from mlmodel_operator.rollout.machine import OVERRIDE_ANNOTATION

OVERRIDES = {
    "promote": "skip the remaining steps and promote the canary",
    "abort": "roll the canary back now",
    "retry": "judge a paused step again, or try a rolled-back revision again",
}


class PluginError(Exception):
    """What the user can fix, said in one line."""


def _api(args: argparse.Namespace) -> client.ApiClient:
    try:
        return config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    except config.ConfigException as err:
        raise PluginError(f"cannot load the kubeconfig: {err}") from err


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return args.namespace
    try:
        _, current = config.list_kube_config_contexts(config_file=args.kubeconfig)
    except config.ConfigException:
        return "default"
    if args.context:
        contexts, _ = config.list_kube_config_contexts(config_file=args.kubeconfig)
        current = next((c for c in contexts if c["name"] == args.context), current)
    return (current.get("context") or {}).get("namespace") or "default"


def _get_model(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    try:
        return custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name
        )
    except ApiException as err:
        if err.status == 404:
            raise PluginError(
                f'mlmodeldeployments.{api.GROUP} "{name}" not found in namespace "{namespace}"'
            ) from err
        raise PluginError(f"reading {name}: {err.status} {err.reason}") from err


def load(api_client: client.ApiClient, namespace: str, name: str) -> Model:
    """The model and what it owns: Deployments by the model's selector labels, their ReplicaSets
    and pods (the canary's pods carry the same selector labels, and one more)."""
    body = _get_model(client.CustomObjectsApi(api_client), namespace, name)
    selector = selector_string(Owner.from_body(body))
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    to_dict = api_client.sanitize_for_serialization
    uid = body["metadata"]["uid"]

    def owned(obj: Any) -> bool:
        return any(r.uid == uid for r in obj.metadata.owner_references or [])

    deployments = [
        d
        for d in apps.list_namespaced_deployment(namespace, label_selector=selector).items
        if owned(d)
    ]
    names = {d.metadata.name for d in deployments}
    sets = [
        rs
        for rs in apps.list_namespaced_replica_set(namespace, label_selector=selector).items
        if any(r.name in names for r in rs.metadata.owner_references or [])
    ]
    set_names = {rs.metadata.name for rs in sets}
    pods = [
        p
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        if any(r.name in set_names for r in p.metadata.owner_references or [])
    ]
    return Model(body, to_dict(deployments), to_dict(sets), to_dict(pods))


def cmd_get(args: argparse.Namespace) -> int:
    api_client, namespace = _api(args), _namespace(args)
    while True:
        text = render(load(api_client, namespace, args.name))
        if not args.watch:
            sys.stdout.write(text)
            return 0
        sys.stdout.write("\x1b[H\x1b[2J" + text)  # redraw in place, as `watch` does
        sys.stdout.flush()
        time.sleep(args.interval)


def cmd_override(args: argparse.Namespace) -> int:
    api_client, namespace = _api(args), _namespace(args)
    custom = client.CustomObjectsApi(api_client)
    _get_model(custom, namespace, args.name)
    patch = {"metadata": {"annotations": {OVERRIDE_ANNOTATION: args.command}}}
    custom.patch_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, args.name, patch
    )
    print(
        f"mlmodeldeployment.{api.GROUP}/{args.name} annotated {OVERRIDE_ANNOTATION}={args.command}"
        f" ({OVERRIDES[args.command]}); the operator acts once and removes the annotation"
    )
    return 0


def log_targets(model: Model, sidecar: bool) -> list[tuple[str, str]]:
    """(pod, container) pairs to read: the model server of each pod that has one, and the
    sidecar where asked for and present."""
    wanted = [MODEL_CONTAINER, *([SIDECAR_NAME] if sidecar else [])]
    targets = []
    for pod in sorted(model.pods, key=lambda p: p["metadata"]["name"]):
        present = {c["name"] for c in pod["spec"]["containers"]}
        targets += [(pod["metadata"]["name"], c) for c in wanted if c in present]
    return targets


def _stream(
    core: client.CoreV1Api, namespace: str, pod: str, container: str, args: argparse.Namespace
) -> Iterator[str]:
    kwargs: dict[str, Any] = {
        "container": container,
        "follow": args.follow,
        "_preload_content": False,
    }
    if args.tail is not None:
        kwargs["tail_lines"] = args.tail
    response = core.read_namespaced_pod_log(pod, namespace, **kwargs)
    pending = b""
    for chunk in response.stream(amt=65536, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


def cmd_logs(args: argparse.Namespace) -> int:
    api_client, namespace = _api(args), _namespace(args)
    targets = log_targets(load(api_client, namespace, args.name), args.sidecar)
    if not targets:
        raise PluginError(f"{args.name} has no pods to read logs from")
    core = client.CoreV1Api(api_client)
    out = threading.Lock()
    failures: list[str] = []

    def follow(pod: str, container: str) -> None:
        prefix = f"[{pod}/{container}] "
        try:
            for line in _stream(core, namespace, pod, container, args):
                with out:
                    print(prefix + line, flush=True)
        except ApiException as err:
            failures.append(f"{pod}/{container}: {err.status} {err.reason}")

    threads = [threading.Thread(target=follow, args=t, daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        return 130
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures and len(failures) == len(targets) else 0


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="the model's namespace (default: the context's)")
    common.add_argument("--context", help="the kubeconfig context to use")
    common.add_argument("--kubeconfig", help="path to the kubeconfig (default: as kubectl)")
    top = argparse.ArgumentParser(
        prog="kubectl mlmd", description="Look at MLModelDeployments and act on their rollouts."
    )
    sub = top.add_subparsers(dest="command", required=True)
    get = sub.add_parser(
        "get", parents=[common], help="the model, its Deployments and pods as a tree"
    )
    get.add_argument("name")
    get.add_argument("-w", "--watch", action="store_true", help="redraw until interrupted")
    get.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    get.set_defaults(run=cmd_get)
    for verb, what in OVERRIDES.items():
        override = sub.add_parser(verb, parents=[common], help=what)
        override.add_argument("name")
        override.set_defaults(run=cmd_override)
    logs = sub.add_parser("logs", parents=[common], help="the model server's logs across pods")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep streaming new lines")
    logs.add_argument("--sidecar", action="store_true", help="the monitoring sidecar's logs too")
    logs.add_argument("--tail", type=int, help="lines of recent log per container")
    logs.set_defaults(run=cmd_logs)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
