"""Pure: an MLModelDeployment and its Deployments, ReplicaSets and pods -> the lines that
`kubectl mlmd get` prints, a summary and then a tree, as `kubectl argo rollouts get` draws."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TRACK_LABEL = "machine-learning.org/track"
VERSION_LABEL = "app.kubernetes.io/version"


@dataclass
class Model:
    """What the API server holds for one model, as plain dicts (the API's JSON)."""

    body: dict[str, Any]
    deployments: list[dict[str, Any]] = field(default_factory=list)
    replica_sets: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def _controller(obj: dict[str, Any]) -> str | None:
    refs = obj["metadata"].get("ownerReferences") or []
    return next((r["name"] for r in refs if r.get("controller")), None)


def age(timestamp: str | None, now: datetime) -> str:
    """kubectl's short age: 45s, 12m, 3h, 2d."""
    if not timestamp:
        return ""
    seconds = int((now - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def pod_status(pod: dict[str, Any]) -> tuple[str, str, int]:
    """kubectl's STATUS column (a waiting container's reason wins), READY, and restarts."""
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    reason = status.get("phase") or "Pending"
    for c in containers:
        waiting = (c.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    ready = sum(1 for c in containers if c.get("ready"))
    total = len(containers) or len((pod.get("spec") or {}).get("containers") or [])
    return reason, f"{ready}/{total}", sum(c.get("restartCount", 0) for c in containers)


def _ready_of(rs: dict[str, Any]) -> str:
    return f"{(rs.get('status') or {}).get('readyReplicas', 0)}/{rs['spec'].get('replicas', 0)}"


def _analysis(record: dict[str, Any]) -> str:
    parts = [record.get("result", "")]
    if record.get("requests") is not None:
        parts.append(f"{record['requests']:g} requests")
    if record.get("errorRatio") is not None:
        parts.append(f"error ratio {record['errorRatio']:.3f}")
    if record.get("p99LatencySeconds") is not None:
        parts.append(f"p99 {record['p99LatencySeconds']:.3f}s")
    if record.get("drift") is not None:
        parts.append("drift" if record["drift"] else "no drift")
    if record.get("accuracy") is not None:
        parts.append(f"accuracy {record['accuracy']:.3f} over {record.get('labels', 0):g} labels")
    if record.get("stableAccuracy") is not None:
        parts.append(f"stable {record['stableAccuracy']:.3f}")
    text = ", ".join(p for p in parts if p)
    return f"{text} at {record.get('time', '?')}: {record.get('message', '')}".rstrip(": ")


def summary(model: Model) -> list[tuple[str, str]]:
    body, status = model.body, model.body.get("status") or {}
    spec = body.get("spec") or {}
    ready = _condition(body, "Ready")
    rows = [
        ("Name", body["metadata"]["name"]),
        ("Namespace", body["metadata"].get("namespace", "")),
        ("Status", f"{status.get('phase', 'Unknown')} ({ready.get('reason', 'no Ready yet')})"),
        ("Message", status.get("message", "")),
        ("Model", f"{spec.get('model_type', '?')}, version {spec.get('model_version') or '-'}"),
        ("Serving", status.get("modelVersion") or "-"),
        (
            "Replicas",
            f"desired {spec.get('replicas', 1)}, current {status.get('replicas', 0)}, "
            f"ready {status.get('readyReplicas', 0)}, updated {status.get('updatedReplicas', 0)}",
        ),
        ("Endpoint", status.get("endpoint") or "-"),
    ]
    rollout = status.get("rollout") or {}
    if rollout:
        steps = ((spec.get("rollout") or {}).get("steps")) or []
        step = f"step {rollout['step']}/{len(steps)}" if rollout.get("step") else "no step"
        weight = f"weight {rollout['weight']}%" if rollout.get("weight") is not None else ""
        versions = f"stable {rollout.get('stableVersion') or '-'}, canary " + (
            rollout.get("canaryVersion") or "-"
        )
        rows.append(("Rollout", ", ".join(p for p in (rollout.get("phase"), step, weight) if p)))
        rows.append(("Versions", versions))
        if rollout.get("message") and rollout["message"] != status.get("message"):
            rows.append(("Rollout message", rollout["message"]))
        if rollout.get("lastAnalysis"):
            rows.append(("Last analysis", _analysis(rollout["lastAnalysis"])))
    monitoring = _condition(body, "MonitoringReady")
    if monitoring:
        rows.append(("Monitoring", f"{monitoring.get('reason')}: {monitoring.get('message', '')}"))
        drift = (rollout.get("lastAnalysis") or {}).get("drift")
        rows.append(
            (
                "Drift",
                "no canary analysis has looked at drift yet"
                if drift is None
                else (
                    "drift detected in the last analysis"
                    if drift
                    else "no drift in the last analysis"
                ),
            )
        )
    return [(k, v) for k, v in rows if v]


def tree(model: Model, now: datetime | None = None) -> list[str]:
    """The model, its Deployments (stable, then canary), their ReplicaSets with pods, as rows of
    NAME KIND STATUS READY AGE INFO, indented with box-drawing characters."""
    now = now or datetime.now(UTC)
    meta = model.body["metadata"]
    status = model.body.get("status") or {}
    rows: list[tuple[str, str, str, str, str, str]] = [
        (
            meta["name"],
            "MLModelDeployment",
            status.get("phase", ""),
            "",
            age(meta.get("creationTimestamp"), now),
            "",
        )
    ]
    sets_of: dict[str, list[dict[str, Any]]] = {}
    for rs in model.replica_sets:
        sets_of.setdefault(_controller(rs) or "", []).append(rs)
    pods_of: dict[str, list[dict[str, Any]]] = {}
    for pod in model.pods:
        pods_of.setdefault(_controller(pod) or "", []).append(pod)

    def key(d: dict[str, Any]) -> tuple[bool, str]:
        labels = d["spec"]["template"]["metadata"].get("labels") or {}
        return (labels.get(TRACK_LABEL) == "canary", d["metadata"]["name"])

    deployments = sorted(model.deployments, key=key)
    for i, dep in enumerate(deployments):
        last_dep = i == len(deployments) - 1
        labels = dep["spec"]["template"]["metadata"].get("labels") or {}
        track = "canary" if labels.get(TRACK_LABEL) == "canary" else "stable"
        dstatus = dep.get("status") or {}
        rows.append(
            (
                ("└── " if last_dep else "├── ") + dep["metadata"]["name"],
                "Deployment",
                track,
                f"{dstatus.get('readyReplicas', 0)}/{dep['spec'].get('replicas', 0)}",
                age(dep["metadata"].get("creationTimestamp"), now),
                f"version {labels.get(VERSION_LABEL) or '-'}",
            )
        )
        prefix = "    " if last_dep else "│   "
        sets = [
            rs
            for rs in sets_of.get(dep["metadata"]["name"], [])
            if (rs["spec"].get("replicas") or 0) > 0 or pods_of.get(rs["metadata"]["name"])
        ]
        sets.sort(key=lambda rs: rs["metadata"].get("creationTimestamp") or "")
        for j, rs in enumerate(sets):
            last_rs = j == len(sets) - 1
            revision = (rs["metadata"].get("annotations") or {}).get(
                "deployment.kubernetes.io/revision", "?"
            )
            rows.append(
                (
                    prefix + ("└── " if last_rs else "├── ") + rs["metadata"]["name"],
                    "ReplicaSet",
                    f"revision {revision}",
                    _ready_of(rs),
                    age(rs["metadata"].get("creationTimestamp"), now),
                    "",
                )
            )
            inner = prefix + ("    " if last_rs else "│   ")
            pods = sorted(
                pods_of.get(rs["metadata"]["name"], []), key=lambda p: p["metadata"]["name"]
            )
            for k, pod in enumerate(pods):
                reason, ready, restarts = pod_status(pod)
                node = (pod.get("spec") or {}).get("nodeName") or "unscheduled"
                rows.append(
                    (
                        inner
                        + ("└── " if k == len(pods) - 1 else "├── ")
                        + pod["metadata"]["name"],
                        "Pod",
                        reason,
                        ready,
                        age(pod["metadata"].get("creationTimestamp"), now),
                        f"node {node}" + (f", restarts {restarts}" if restarts else ""),
                    )
                )
    header = ("NAME", "KIND", "STATUS", "READY", "AGE", "INFO")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return [
        "  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip()
        for row in [header, *rows]
    ]


def render(model: Model, now: datetime | None = None) -> str:
    rows = summary(model)
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{(k + ':').ljust(width)}{v}" for k, v in rows]
    return "\n".join([*lines, "", *tree(model, now)]) + "\n"
