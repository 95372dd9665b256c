"""The API server restarts and the webhook disappears: the gate keeps its answers, or refuses."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from tests.resilience.cluster import (
    Requests,
    audit_by_uid,
    manifest,
    notified,
    settled,
    terminal_records,
    verify_audit,
)
from tests.support.kubectl import Kubectl
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.devcluster import ControlPlane


def test_api_server_restart_mid_run_loses_nothing_and_the_operator_reconnects(
    operator: OperatorProcess, people: People, control_plane: ControlPlane
) -> None:
    ns = people.namespace
    orchestrator = Requests(control_plane, ns, people.orchestrator)
    alice = Requests(control_plane, ns, people.alice)
    before = [f"before-{i:02d}" for i in range(20)]
    after = [f"after-{i:02d}" for i in range(10)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: orchestrator.create(manifest(n)), before))
    orchestrator.wait(before, notified, within=60)
    assert operator.process is not None
    pid = operator.process.pid

    with ThreadPoolExecutor(max_workers=8) as pool:
        # Half the decisions race the restart; the client retries what the API server refused.
        decided = [
            pool.submit(alice.annotate, n, {"greenlight.dev/decision": "approve"})
            for n in before[:10]
        ]
        control_plane.restart_apiserver()
        decided += [
            pool.submit(alice.annotate, n, {"greenlight.dev/decision": "approve"})
            for n in before[10:]
        ]
        for future in decided:
            future.result()
        list(pool.map(lambda n: orchestrator.create(manifest(n)), after))
    orchestrator.wait(after, notified, within=60)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: alice.annotate(n, {"greenlight.dev/decision": "approve"}), after))

    objects = orchestrator.wait(before + after, settled, within=90)
    assert operator.running, "the operator died with the API server:\n" + operator.tail()
    assert operator.process.pid == pid, "the operator was restarted instead of reconnecting"
    audit = audit_by_uid(operator.audit_records())
    for name in before + after:
        status = objects[name]["status"]
        assert status["phase"] == "Approved", (name, status)
        assert status["decision"]["by"] == people.alice, (name, status)
        assert len(status["notifications"]) == 1, (name, status)
        events = audit[objects[name]["metadata"]["uid"]]
        assert events.get("requested") == 1, (name, events)
        assert events.get("notified") == 1, (name, events)
        assert terminal_records(events) == 1, (name, events)
    verified = verify_audit(operator.audit_file, operator.audit_key_file)
    assert verified.returncode == 0, verified.stderr + verified.stdout


def test_decisions_fail_closed_with_a_clear_error_while_the_webhook_is_down(
    operator: OperatorProcess, people: People, kubectl: Kubectl, control_plane: ControlPlane
) -> None:
    ns = people.namespace
    orchestrator = Requests(control_plane, ns, people.orchestrator)
    orchestrator.create(manifest("gated"))
    orchestrator.wait(["gated"], notified, within=30)

    operator.kill()
    try:
        refused = kubectl(
            "-n",
            ns,
            "annotate",
            "apr/gated",
            "greenlight.dev/decision=approve",
            as_user=people.alice,
            check=False,
        )
        created = kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {**manifest("while-down"), "metadata": {"name": "while-down", "namespace": ns}}
            ),
            as_user=people.orchestrator,
            check=False,
        )
        obj = kubectl.json("-n", ns, "get", "apr/gated")
    finally:
        operator.start()

    assert refused.returncode != 0, refused.stdout
    assert "failed calling webhook" in refused.stderr, refused.stderr
    assert "greenlight" in refused.stderr, refused.stderr
    assert created.returncode != 0, created.stdout
    assert "failed calling webhook" in created.stderr, created.stderr
    assert obj["status"]["phase"] == "Pending", obj["status"]
    annotations = obj["metadata"].get("annotations") or {}
    assert "greenlight.dev/decision" not in annotations, annotations
    assert not any(key.startswith("decisions.greenlight.dev/") for key in annotations), annotations

    # Once the operator is back, the same command works: nothing was half-recorded.
    kubectl(
        "-n", ns, "annotate", "apr/gated", "greenlight.dev/decision=approve", as_user=people.alice
    )
    assert orchestrator.wait(["gated"], settled, within=30)["gated"]["status"]["phase"] == (
        "Approved"
    )
