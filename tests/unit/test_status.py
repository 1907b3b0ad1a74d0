"""Observed children -> phase and conditions, as a table."""

from __future__ import annotations

from typing import Any

import pytest

from mlmodel_operator.builders.autoscaling import AutoscalingPlan
from mlmodel_operator.builders.meta import WOKEN_ANNOTATION
from mlmodel_operator.status import (
    Observation,
    compute_status,
    evaluate,
    merge_conditions,
    transition_events,
)

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def deployment(
    *,
    generation: int = 1,
    observed: int = 1,
    replicas: int = 1,
    updated: int = 1,
    ready: int = 1,
    available: int = 1,
    progressing_reason: str = "NewReplicaSetAvailable",
    available_status: str = "True",
    replica_failure: str | None = None,
) -> dict[str, Any]:
    failure = (
        [
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": replica_failure,
            }
        ]
        if replica_failure
        else []
    )
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": progressing_reason},
                {"type": "Available", "status": available_status, "reason": "MinimumReplicas"},
                *failure,
            ],
        },
    }


def pod(
    *,
    ready: bool = True,
    unschedulable: str | None = None,
    version: str = "v1",
    waiting: str | None = None,
) -> dict:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    containers = []
    if waiting is not None:
        state = {"waiting": {"reason": waiting, "message": f"{waiting} for model-server"}}
        containers = [{"name": "model-server", "ready": False, "state": state}]
    if unschedulable is not None:
        conditions = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        ]
    return {
        "metadata": {"labels": {"app.kubernetes.io/version": version}},
        "status": {
            "phase": "Running" if ready else "Pending",
            "conditions": conditions,
            "containerStatuses": containers,
        },
    }


GPU_MESSAGE = (
    "0/4 nodes are available: 2 Insufficient nvidia.com/gpu, 2 node(s) had untolerated taint"
)

QUOTA_MESSAGE = 'pods "m-7d9-x" is forbidden: exceeded quota: no-pods, requested: pods=1'
ADMISSION_MESSAGE = 'pods "m-7d9-x" is forbidden: violates PodSecurity "restricted:latest"'


def obs(**kw: Any) -> Observation:
    base: dict[str, Any] = {
        "generation": 1,
        "desired_replicas": 1,
        "gpu_resource": "nvidia.com/gpu",
        "endpoint": "http://m.ns.svc.cluster.local",
        "selector": "a=b",
    }
    return Observation(**{**base, **kw})


# (id, observation, phase, Ready (status, reason), Progressing status, Scheduled status)
TABLE = [
    ("no-deployment-yet", obs(), "Pending", ("False", "Creating"), "True", "Unknown"),
    (
        "controller-not-caught-up",
        obs(deployment=deployment(generation=2, observed=1), pods=[pod()]),
        "Progressing",
        ("False", "RollingOut"),
        "True",
        "True",
    ),
    (
        "new-replicaset-not-available",
        obs(
            desired_replicas=2,
            deployment=deployment(replicas=3, updated=1, ready=2, available=2),
            pods=[pod(), pod(), pod(ready=False)],
        ),
        "Progressing",
        ("False", "RollingOut"),
        "True",
        "True",
    ),
    (
        "old-pods-still-serving",
        obs(deployment=deployment(replicas=2, updated=1, ready=2, available=2), pods=[pod()]),
        "Progressing",
        ("False", "RollingOut"),
        "True",
        "True",
    ),
    (
        "complete",
        obs(deployment=deployment(), pods=[pod()]),
        "Ready",
        ("True", "ModelServing"),
        "False",
        "True",
    ),
    (
        "scaled-to-zero",
        obs(desired_replicas=0, deployment=deployment(replicas=0, updated=0, ready=0, available=0)),
        "Ready",
        ("True", "ScaledToZero"),
        "False",
        "True",
    ),
    (
        "deadline-exceeded",
        obs(
            deployment=deployment(
                updated=0, ready=0, available=0, progressing_reason="ProgressDeadlineExceeded"
            ),
            pods=[pod(ready=False)],
        ),
        "Degraded",
        ("False", "ProgressDeadlineExceeded"),
        "False",
        "True",
    ),
    (
        "insufficient-gpu-nothing-serving",
        obs(
            deployment=deployment(ready=0, available=0, available_status="False"),
            pods=[pod(ready=False, unschedulable=GPU_MESSAGE)],
        ),
        "Pending",
        ("False", "InsufficientGPU"),
        "False",
        "False",
    ),
    (
        "insufficient-gpu-old-pods-serving",
        obs(
            desired_replicas=2,
            deployment=deployment(replicas=2, updated=1, ready=1, available=1),
            pods=[pod(), pod(ready=False, unschedulable=GPU_MESSAGE)],
        ),
        "Degraded",
        ("False", "InsufficientGPU"),
        "False",
        "False",
    ),
    (
        "unschedulable-other-cause",
        obs(
            deployment=deployment(ready=0, available=0),
            pods=[pod(ready=False, unschedulable="0/4 nodes are available: 4 Insufficient memory")],
        ),
        "Pending",
        ("False", "Unschedulable"),
        "False",
        "False",
    ),
    (
        "image-cannot-be-pulled",
        obs(
            deployment=deployment(ready=0, available=0),
            pods=[pod(ready=False, waiting="ImagePullBackOff")],
        ),
        "Failed",
        ("False", "ImagePullBackOff"),
        "False",
        "True",
    ),
    (
        "crash-looping-while-old-pods-serve",
        obs(
            desired_replicas=2,
            deployment=deployment(replicas=2, updated=1, ready=1, available=1),
            pods=[pod(), pod(ready=False, waiting="CrashLoopBackOff")],
        ),
        "Degraded",
        ("False", "CrashLoopBackOff"),
        "False",
        "True",
    ),
    (
        "quota-refuses-every-pod",
        obs(
            deployment=deployment(
                replicas=0, updated=0, ready=0, available=0, replica_failure=QUOTA_MESSAGE
            ),
        ),
        "Pending",
        ("False", "FailedCreate"),
        "False",
        "True",
    ),
    (
        "quota-refuses-new-pods-while-old-serve",
        obs(
            desired_replicas=2,
            deployment=deployment(replicas=1, updated=0, ready=1, replica_failure=QUOTA_MESSAGE),
            pods=[pod()],
        ),
        "Degraded",
        ("False", "FailedCreate"),
        "False",
        "True",
    ),
    (
        "admission-refuses-every-pod",
        obs(
            deployment=deployment(
                replicas=0, updated=0, ready=0, available=0, replica_failure=ADMISSION_MESSAGE
            ),
        ),
        "Failed",
        ("False", "FailedCreate"),
        "False",
        "True",
    ),
    (
        "invalid-spec",
        obs(invalid_spec="spec.x: bad"),
        "Failed",
        ("False", "InvalidSpec"),
        "False",
        "Unknown",
    ),
    (
        "missing-permission",
        obs(reconcile_error="Service m: forbidden"),
        "Failed",
        ("False", "ReconcileError"),
        "False",
        "Unknown",
    ),
]


@pytest.mark.parametrize(
    ("case", "observation", "phase", "ready", "progressing", "scheduled"),
    TABLE,
    ids=[row[0] for row in TABLE],
)
def test_status_table(
    case: str,
    observation: Observation,
    phase: str,
    ready: tuple[str, str],
    progressing: str,
    scheduled: str,
) -> None:
    got_phase, conditions = evaluate(observation)
    assert got_phase == phase
    assert (conditions["Ready"].status, conditions["Ready"].reason) == ready
    assert conditions["Progressing"].status == progressing
    assert conditions["Scheduled"].status == scheduled


def test_unschedulable_message_is_the_schedulers() -> None:
    _, conditions = evaluate(
        obs(deployment=deployment(ready=0), pods=[pod(ready=False, unschedulable=GPU_MESSAGE)])
    )
    assert GPU_MESSAGE in conditions["Scheduled"].message
    assert conditions["Ready"].message == (
        f"waiting for capacity for generation 1: {conditions['Scheduled'].message}"
    )


@pytest.mark.parametrize(
    ("ready", "desired", "available"),
    [
        (0, 1, ("False", "NoReplicaReady")),
        (1, 2, ("True", "ReplicasReady")),
        (0, 0, ("False", "ScaledToZero")),
    ],
)
def test_available_means_a_replica_answers(
    ready: int, desired: int, available: tuple[str, str]
) -> None:
    # The Deployment says Available=True with 0 of 1 ready (maxUnavailable 1); a model does not.
    dep = deployment(replicas=desired, updated=desired, ready=ready, available=ready)
    _, conditions = evaluate(obs(desired_replicas=desired, deployment=dep))
    assert (conditions["Available"].status, conditions["Available"].reason) == available


def test_a_gpu_rollout_that_cannot_place_its_new_pod_says_what_it_cost() -> None:
    # maxUnavailable 1, maxSurge 0: one old pod went for a new one that cannot be scheduled.
    phase, conditions = evaluate(
        obs(
            generation=3,
            model_version="v2",
            desired_replicas=4,
            deployment=deployment(generation=3, observed=3, replicas=4, updated=1, ready=3),
            pods=[pod(), pod(), pod(), pod(ready=False, unschedulable=GPU_MESSAGE)],
        )
    )
    assert phase == "Degraded"
    assert conditions["Ready"].message.endswith(
        "; 3 of 4 replicas serving (generation 3 (model_version v2) blocked)"
    )
    assert conditions["Progressing"].status == "False"


def test_rollout_messages_name_generation_and_version_and_wait_for_the_controller() -> None:
    fresh = obs(
        generation=2,
        model_version="v2",
        desired_replicas=4,
        deployment=deployment(generation=2, observed=1, replicas=4, updated=4, ready=4),
    )
    phase, conditions = evaluate(fresh)
    # The Deployment's counts are the previous generation's: not "4 of 4 updated".
    assert (phase, conditions["Ready"].message) == (
        "Progressing",
        "rolling out generation 2 (model_version v2): waiting for the Deployment controller",
    )


def test_endpoint_once_a_replica_has_been_ready() -> None:
    never = compute_status(obs(deployment=deployment(ready=0, available=0)), {}, NOW)
    assert never["endpoint"] is None
    serving = compute_status(obs(deployment=deployment(), pods=[pod()]), never, NOW)
    assert serving["endpoint"] == "http://m.ns.svc.cluster.local"
    down = compute_status(obs(deployment=deployment(ready=0, available=0)), serving, NOW)
    assert down["endpoint"] == "http://m.ns.svc.cluster.local"


def test_an_edit_mid_rollout_posts_an_event_naming_its_generation() -> None:
    first = compute_status(
        obs(generation=2, deployment=deployment(generation=2, ready=0, available=0)), {}, NOW
    )
    again = compute_status(
        obs(generation=3, deployment=deployment(generation=3, observed=2, ready=0)), first, NOW
    )
    events = transition_events(first, again)
    assert [(e.reason, e.type) for e in events] == [("RollingOut", "Normal")]
    assert "generation 3" in events[0].message


def test_a_wait_for_capacity_is_a_warning() -> None:
    waiting = compute_status(
        obs(deployment=deployment(ready=0), pods=[pod(ready=False, unschedulable=GPU_MESSAGE)]),
        {},
        NOW,
    )
    assert waiting["phase"] == "Pending"
    assert [(e.reason, e.type) for e in transition_events({}, waiting)] == [
        ("InsufficientGPU", "Warning")
    ]


def test_a_note_on_what_is_served_joins_the_ready_message() -> None:
    note = "no model is loaded: model_uri is unset"
    _, conditions = evaluate(obs(deployment=deployment(), pods=[pod()], model_note=note))
    assert conditions["Ready"].message == f"1/1 replicas ready, generation 1; {note}"


def test_replica_failure_message_is_the_deployment_controllers() -> None:
    failing = deployment(replicas=0, updated=0, ready=0, available=0, replica_failure=QUOTA_MESSAGE)
    _, conditions = evaluate(obs(deployment=failing))
    assert conditions["Ready"].message.endswith(QUOTA_MESSAGE)


def test_rollout_message_counts_old_replicas() -> None:
    _, conditions = evaluate(
        obs(
            desired_replicas=2,
            deployment=deployment(replicas=3, updated=1, ready=2, available=2),
        )
    )
    assert conditions["Ready"].message == (
        "rolling out generation 1: 1 of 2 replicas updated, 2 ready, 2 old replica(s) still serving"
    )


def test_last_transition_time_moves_only_on_a_flip() -> None:
    first = compute_status(obs(deployment=deployment(ready=0, available=0)), {}, NOW)
    same = compute_status(obs(deployment=deployment(ready=0, available=0)), first, LATER)
    assert same == first  # nothing changed: an identical status, so no write
    flipped = compute_status(obs(deployment=deployment(), pods=[pod()]), same, LATER)
    by_type = {c["type"]: c for c in flipped["conditions"]}
    assert by_type["Ready"]["lastTransitionTime"] == LATER
    assert by_type["Scheduled"]["lastTransitionTime"] == NOW  # stayed True


def test_observed_generation_on_status_and_every_condition() -> None:
    status = compute_status(obs(generation=7, deployment=deployment()), {}, NOW)
    assert status["observedGeneration"] == 7
    assert {c["observedGeneration"] for c in status["conditions"]} == {7}


def test_one_condition_per_type() -> None:
    previous = [{"type": "Ready", "status": "True", "lastTransitionTime": NOW}] * 2
    _, conditions = evaluate(obs(deployment=deployment()))
    merged = merge_conditions(previous, conditions, 1, LATER)
    types = [c["type"] for c in merged]
    assert sorted(types) == sorted(set(types))


def test_serving_versions_mid_rollout() -> None:
    status = compute_status(
        obs(
            deployment=deployment(replicas=2, updated=1, ready=2),
            pods=[pod(version="v1"), pod(version="v2"), pod(ready=False, version="v3")],
        ),
        {},
        NOW,
    )
    assert status["modelVersion"] == "v1,v2"


def test_counts_and_display() -> None:
    status = compute_status(
        obs(desired_replicas=3, deployment=deployment(replicas=3, updated=2, ready=1)), {}, NOW
    )
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"]) == (3, 2, 1)
    assert status["ready"] == "1/3"


def test_events_on_transitions_only() -> None:
    pending = compute_status(obs(), {}, NOW)
    rolling = compute_status(obs(deployment=deployment(ready=0, available=0)), pending, NOW)
    ready = compute_status(obs(deployment=deployment(), pods=[pod()]), rolling, NOW)
    stuck = compute_status(
        obs(deployment=deployment(ready=0), pods=[pod(ready=False, unschedulable=GPU_MESSAGE)]),
        ready,
        NOW,
    )
    assert [e.reason for e in transition_events({}, pending)] == ["Creating"]
    assert [(e.type, e.reason) for e in transition_events(pending, rolling)] == [
        ("Normal", "RollingOut")
    ]
    assert [(e.type, e.reason) for e in transition_events(rolling, ready)] == [
        ("Normal", "ModelServing")
    ]
    assert [(e.type, e.reason) for e in transition_events(ready, stuck)] == [
        ("Warning", "InsufficientGPU")
    ]
    assert transition_events(ready, ready) == []


def test_monitoring_condition() -> None:
    from mlmodel_operator.status import MonitoringSetup, monitoring_condition

    off = monitoring_condition(MonitoringSetup(False, False, None))
    assert (off.status, off.reason) == ("False", "Disabled")
    live = monitoring_condition(MonitoringSetup(True, False, ""))
    assert (live.status, live.reason) == ("True", "ScrapeAnnotations")
    assert "first window of live traffic" in live.message
    operator = monitoring_condition(MonitoringSetup(True, True, "s3://b/ref.csv"))
    assert operator.reason == "ServiceMonitorReady" and "s3://b/ref.csv" in operator.message
    assert monitoring_condition(None).status == "Unknown"


# --- the model fetcher (init container) -------------------------------------------------------

FETCH_FAILURE = "s3://models/iris: AccessDenied: Access Denied."
CRASH_LOOP = {
    "reason": "CrashLoopBackOff",
    "message": "back-off 20s restarting failed container=model-fetch pod=m-7d9-x",
}


def fetch_status(
    state: dict[str, Any], last: dict[str, Any] | None = None, name: str = "model-fetch"
) -> dict[str, Any]:
    return {"name": name, "ready": False, "state": state, "lastState": last or {}}


def failed_run(message: str = FETCH_FAILURE + "\n", code: int = 1) -> dict[str, Any]:
    reason = "OOMKilled" if code == 137 else "Error"
    return {"terminated": {"exitCode": code, "reason": reason, "message": message}}


def initializing_pod(*init: dict[str, Any], version: str = "v2") -> dict[str, Any]:
    """A pod still initializing: its model server waits for the init containers."""
    waiting = {"waiting": {"reason": "PodInitializing"}}
    return {
        "metadata": {"labels": {"app.kubernetes.io/version": version}},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized"},
                {"type": "Ready", "status": "False"},
            ],
            "initContainerStatuses": list(init),
            "containerStatuses": [{"name": "model-server", "ready": False, "state": waiting}],
        },
    }


NEW_POD_ONLY = deployment(ready=0, available=0)
# (id, init container status, phase, Ready reason, Ready message after "generation 1: ")
FETCH_TABLE = [
    (
        "failed-in-crash-loop",
        fetch_status({"waiting": CRASH_LOOP}, failed_run()),
        "Failed",
        "ModelFetchFailed",
        FETCH_FAILURE,
    ),
    (
        "failed-first-run",
        fetch_status(failed_run()),
        "Failed",
        "ModelFetchFailed",
        FETCH_FAILURE,
    ),
    # A retry under way keeps the last failure rather than flapping to RollingOut and back.
    (
        "retrying-after-a-failure",
        fetch_status({"running": {"startedAt": "2026-01-01T00:00:00Z"}}, failed_run()),
        "Failed",
        "ModelFetchFailed",
        FETCH_FAILURE,
    ),
    (
        "killed-without-a-message",
        fetch_status({"waiting": CRASH_LOOP}, failed_run("", 137)),
        "Failed",
        "ModelFetchFailed",
        "container model-fetch exited with code 137 (OOMKilled)",
    ),
    # FallbackToLogsOnError: the kubelet took the log's tail; its last line is the exception.
    (
        "traceback-from-the-log",
        fetch_status(failed_run("Traceback (most recent call last):\n  ...\nMemoryError\n")),
        "Failed",
        "ModelFetchFailed",
        "MemoryError",
    ),
    (
        "missing-secret",
        fetch_status(
            {
                "waiting": {
                    "reason": "CreateContainerConfigError",
                    "message": 'secret "s3-creds" not found',
                }
            }
        ),
        "Failed",
        "CreateContainerConfigError",
        'container model-fetch: CreateContainerConfigError: secret "s3-creds" not found',
    ),
    (
        "fetcher-image-cannot-be-pulled",
        fetch_status({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling"}}),
        "Failed",
        "ImagePullBackOff",
        "container model-fetch: ImagePullBackOff: Back-off pulling",
    ),
    (
        "downloading",
        fetch_status({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
        "Progressing",
        "RollingOut",
        None,
    ),
    (
        "fetched-then-the-server-starts",
        fetch_status({"terminated": {"exitCode": 0, "reason": "Completed"}}, failed_run()),
        "Progressing",
        "RollingOut",
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "init", "phase", "reason", "message"),
    FETCH_TABLE,
    ids=[row[0] for row in FETCH_TABLE],
)
def test_fetch_status_table(
    case: str, init: dict[str, Any], phase: str, reason: str, message: str | None
) -> None:
    got_phase, conditions = evaluate(obs(deployment=NEW_POD_ONLY, pods=[initializing_pod(init)]))
    assert got_phase == phase
    assert (conditions["Ready"].status, conditions["Ready"].reason) == ("False", reason)
    if message is not None:
        assert conditions["Ready"].message == f"generation 1: {message}"
        assert conditions["Progressing"].status == "False"
        assert conditions["Progressing"].reason == reason


def test_a_failed_fetch_under_old_replicas_degrades_and_is_named_once_per_pod() -> None:
    failing = fetch_status({"waiting": CRASH_LOOP}, failed_run())
    observation = obs(
        desired_replicas=2,
        model_version="v2",
        deployment=deployment(replicas=3, updated=1, ready=2, available=2),
        pods=[pod(), pod(), initializing_pod(failing), initializing_pod(failing)],
    )
    phase, conditions = evaluate(observation)
    assert phase == "Degraded"
    assert conditions["Ready"].reason == "ModelFetchFailed"
    assert conditions["Ready"].message == (
        f"{FETCH_FAILURE} (and 1 more pod(s)); 2 of 2 replicas serving "
        "(generation 1 (model_version v2) blocked)"
    )


def test_a_failed_fetch_is_a_warning_event_with_the_fetchers_line() -> None:
    failing = initializing_pod(fetch_status({"waiting": CRASH_LOOP}, failed_run()))
    status = compute_status(obs(deployment=NEW_POD_ONLY, pods=[failing]), {}, NOW)
    [event] = transition_events({}, status)
    assert (event.type, event.reason) == ("Warning", "ModelFetchFailed")
    assert event.message == f"generation 1: {FETCH_FAILURE}"


KEDA_IDLE = {
    "status": {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": ""},
            {"type": "Active", "status": "False", "reason": "ScalerNotActive", "message": ""},
        ]
    }
}


def test_scaled_to_zero_by_the_autoscaler_is_ready() -> None:
    scaled_object = AutoscalingPlan("ScaledObject")
    observation = obs(
        desired_replicas=0,
        deployment=deployment(replicas=0, updated=0, ready=0, available=0),
        autoscaling=scaled_object,
        autoscaler=KEDA_IDLE,
    )
    status = compute_status(observation, {}, NOW)
    assert status["phase"] == "Ready"
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Ready"]["reason"] == "ScaledToZero"
    assert (by_type["Scaling"]["status"], by_type["Scaling"]["reason"]) == ("True", "Idle")
    assert (status["replicas"], status["readyReplicas"], status["ready"]) == (0, 0, "0/0")
    assert "Scaling" not in {c["type"] for c in compute_status(obs(), {}, NOW)["conditions"]}


def test_replicas_the_autoscaler_asks_for_that_find_no_gpus_are_insufficient_gpu() -> None:
    # The autoscaler raised the Deployment from 2 to 4 replicas (the desired count is the
    # Deployment's); 2 new pods find no GPUs.
    phase, conditions = evaluate(
        obs(
            desired_replicas=4,
            deployment=deployment(replicas=4, updated=4, ready=2, available=2),
            pods=[pod(), pod(), *[pod(ready=False, unschedulable=GPU_MESSAGE)] * 2],
            autoscaling=AutoscalingPlan("HorizontalPodAutoscaler"),
        )
    )
    assert conditions["Scheduled"].reason == "InsufficientGPU"
    assert conditions["Ready"].reason == "InsufficientGPU"
    assert "2 of 4 replicas serving" in conditions["Ready"].message
    assert phase == "Degraded"


def test_a_model_woken_from_zero_is_waking_since_the_wake_until_a_replica_is_ready() -> None:
    woken = "2026-01-01T00:00:00.250Z"
    waking = deployment(updated=0, ready=0, available=0)
    waking["metadata"]["annotations"] = {WOKEN_ANNOTATION: woken}
    waking["spec"] = {"replicas": 1}
    status = compute_status(obs(deployment=waking, pods=[pod(ready=False)]), {}, NOW)
    by_type = {c["type"]: c for c in status["conditions"]}
    assert (status["phase"], by_type["Ready"]["reason"]) == ("Progressing", "Waking")
    assert status["wakingSince"] == woken
    assert f"waking from zero since {woken}" in status["message"]
    # A wake that cannot start is a failure like any other, with its reason.
    failed = compute_status(
        obs(deployment=waking, pods=[pod(ready=False, waiting="CrashLoopBackOff")]), {}, NOW
    )
    assert failed["phase"] == "Failed" and failed["wakingSince"] is None
    # Ready: no longer waking, even before the activator removes its mark.
    served = deployment()
    served["metadata"]["annotations"] = {WOKEN_ANNOTATION: woken}
    status = compute_status(obs(deployment=served, pods=[pod()]), {}, NOW)
    assert status["phase"] == "Ready" and status["wakingSince"] is None
