"""The lifecycle of an ApprovalRequest through kubectl, with the operator as a separate process:
Pending on creation (status, conditions, Event, audit, one console notification), decided by
people, expired on time and after the operator was down at expiresAt."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

from tests.support.identities import cli_for
from tests.support.kubectl import Kubectl
from tests.support.manifests import annotate, approval_request, create, get, poll, wait_phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.core.stamps import plan_digest
from greenlight.core.timefmt import parse_time
from greenlight.devcluster import ControlPlane


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


def audit_events(operator: OperatorProcess, uid: str) -> list[str]:
    return [
        r["event"]
        for r in operator.audit_records()
        if (r.get("request") or {}).get("uid") == uid and r["event"] != "decision_attempted"
    ]


def event_reasons(kubectl: Kubectl, ns: str, name: str) -> list[str]:
    events = kubectl.json("-n", ns, "get", "events", f"--field-selector=involvedObject.name={name}")
    return sorted(e["reason"] for e in events["items"])


def console_lines(operator: OperatorProcess, message: str, ns: str, name: str) -> int:
    return sum(
        1
        for r in operator.log_records()
        if r.get("message") == message and r.get("namespace") == ns and r.get("name") == name
    )


def test_request_is_pending_then_approved_end_to_end_through_kubectl(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    approved_before = operator.metric(
        "greenlight_requests_decided_total", outcome="approved", via="kubectl"
    )
    create(kubectl, approval_request("destroy", ns), people.orchestrator)

    obj = wait_phase(kubectl, ns, "destroy", "Pending")
    obj = poll(
        lambda: (o := get(kubectl, ns, "destroy"))["status"]["notifications"] and o, timeout=10
    )
    uid, status = obj["metadata"]["uid"], obj["status"]
    created = parse_time(obj["metadata"]["creationTimestamp"])
    assert parse_time(status["expiresAt"]) == created + timedelta(minutes=30)
    assert status["planDigest"] == plan_digest("- aws:s3:Bucket logs\n")
    assert status["requestedBy"] == people.orchestrator
    assert status["approvals"] == []
    assert [(n["channel"], n["state"]) for n in status["notifications"]] == [("console", "sent")]
    assert conditions(obj)["Notified"]["status"] == "True"
    assert conditions(obj)["Decided"]["status"] == "False"
    assert audit_events(operator, uid) == ["requested", "notified"]

    decided = annotate(
        kubectl,
        ns,
        "destroy",
        "greenlight.dev/decision=approve",
        "greenlight.dev/reason=plan reviewed",
        as_user="alice",
    )
    assert decided.returncode == 0, decided.stderr

    obj = wait_phase(kubectl, ns, "destroy", "Approved")
    obj = poll(
        lambda: (
            (o := get(kubectl, ns, "destroy"))["status"]["notifications"][0]["state"] == "resolved"
            and o
        ),
        timeout=10,
    )
    status = obj["status"]
    assert status["decision"]["by"] == "alice"
    assert status["decision"]["via"] == "kubectl"
    assert status["decision"]["reason"] == "plan reviewed"
    assert [a["user"] for a in status["approvals"]] == ["alice"]
    assert conditions(obj)["Decided"]["status"] == "True"
    assert conditions(obj)["Decided"]["reason"] == "Approved"
    assert audit_events(operator, uid) == ["requested", "notified", "decided", "receipt_issued"]
    assert poll(lambda: event_reasons(kubectl, ns, "destroy") == ["Approved", "Requested"], 10)
    assert console_lines(operator, "approval requested", ns, "destroy") == 1
    assert console_lines(operator, "approval resolved", ns, "destroy") == 1
    assert (
        operator.metric("greenlight_requests_decided_total", outcome="approved", via="kubectl")
        == approved_before + 1
    )


def test_quorum_of_two_needs_two_distinct_approvers(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("q", ns, policy={"requiredApprovals": 2}), people.orchestrator)
    wait_phase(kubectl, ns, "q", "Pending")

    assert (
        annotate(kubectl, ns, "q", "greenlight.dev/decision=approve", as_user="bob").returncode == 0
    )
    one = poll(lambda: (o := get(kubectl, ns, "q"))["status"]["approvals"] and o, timeout=10)
    assert one["status"]["phase"] == "Pending"
    assert (
        annotate(kubectl, ns, "q", "greenlight.dev/decision=approve", as_user="carol").returncode
        == 0
    )

    status = wait_phase(kubectl, ns, "q", "Approved")["status"]
    assert [a["user"] for a in status["approvals"]] == ["bob", "carol"]
    assert status["decision"]["by"] == "carol"


def test_kubectl_get_shows_the_printer_columns(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("cols", ns), people.orchestrator)
    obj = wait_phase(kubectl, ns, "cols", "Pending")

    header, row = kubectl("-n", ns, "get", "apr").stdout.splitlines()

    assert header.split() == ["NAME", "PHASE", "ACTION", "TARGET", "WORKFLOW", "EXPIRES", "AGE"]
    assert row.split()[:7] == [
        "cols", "Pending", "pulumi", "destroy", "production", "wf-1234", obj["status"]["expiresAt"],
    ]  # fmt: skip


def wait_until(moment: float) -> None:
    """Sleep until a wall-clock moment (expiry is about time passing; nothing to poll)."""
    time.sleep(max(0.0, moment - time.time()))


def test_requests_expire_on_time_and_after_the_operator_was_down_at_expires_at(
    operator: OperatorProcess, people: People, kubectl: Kubectl, control_plane: ControlPlane
) -> None:
    """Two groups of 1m requests (the minimum timeout): the first expires while the operator
    runs; the operator is then killed (SIGKILL) before the second group's expiresAt, and on
    restart the second group is expired at once, at its original expiresAt. Expired is never
    reported as Denied, and `greenlight wait` exits 3 for both."""
    ns = people.namespace
    cli = cli_for(control_plane)
    on_time = ["on-time-1", "on-time-2"]
    for name in on_time:
        policy = {"requiredApprovals": 2}
        create(
            kubectl, approval_request(name, ns, timeout="1m", policy=policy), people.orchestrator
        )
    first = wait_phase(kubectl, ns, on_time[0], "Pending")
    assert (
        annotate(
            kubectl, ns, on_time[1], "greenlight.dev/decision=approve", as_user="alice"
        ).returncode
        == 0
    )
    waiter = cli.start("wait", on_time[0], "-n", ns, as_user=people.orchestrator)
    wait_until(parse_time(first["metadata"]["creationTimestamp"]).timestamp() + 10)
    downtime = ["downtime-1", "downtime-2"]
    for name in downtime:
        create(kubectl, approval_request(name, ns, timeout="1m"), people.orchestrator)
    later = wait_phase(kubectl, ns, downtime[0], "Pending")

    expires = parse_time(first["status"]["expiresAt"]).timestamp()
    for name in on_time:
        obj = wait_phase(
            kubectl, ns, name, "Expired", timeout=max(10.0, expires - time.time() + 10)
        )
        decision = obj["status"]["decision"]
        assert (decision["outcome"], decision["by"], decision["via"]) == (
            "Expired",
            "greenlight",
            "expiry",
        )
        assert decision["at"] == obj["status"]["expiresAt"]
        assert audit_events(operator, obj["metadata"]["uid"]) == [
            "requested",
            "notified",
            "expired",
        ]
    assert time.time() < expires + 10, "expiry was late by more than 10s"
    assert [a["user"] for a in get(kubectl, ns, on_time[1])["status"]["approvals"]] == ["alice"]
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 3, (out, err)
    assert (
        err.strip()
        == f"{on_time[0]}: Expired by greenlight via expiry (no decision before the timeout)"
    )
    late = annotate(kubectl, ns, on_time[1], "greenlight.dev/decision=approve", as_user="bob")
    assert late.returncode != 0
    assert f"{ns}/{on_time[1]} is already Expired by greenlight" in late.stderr

    operator.kill()
    try:
        later_expires = parse_time(later["status"]["expiresAt"]).timestamp()
        wait_until(later_expires + 1)
        assert all(get(kubectl, ns, n)["status"]["phase"] == "Pending" for n in downtime)
    finally:
        operator.start()

    for name in downtime:
        obj = wait_phase(kubectl, ns, name, "Expired", timeout=15)
        assert obj["status"]["decision"]["via"] == "expiry"
        assert obj["status"]["decision"]["at"] == obj["status"]["expiresAt"]
        assert audit_events(operator, obj["metadata"]["uid"]).count("expired") == 1
    waited = cli("wait", downtime[0], "-n", ns, as_user=people.orchestrator)
    assert waited.returncode == 3, waited.stderr
    for name in on_time + downtime:
        reasons = poll(lambda name=name: event_reasons(kubectl, ns, name), timeout=10)
        assert "Denied" not in reasons
        assert get(kubectl, ns, name)["status"]["phase"] == "Expired"
    # The restarted process counts from zero: both expiries it caught up on are counted.
    assert operator.metric(
        "greenlight_requests_decided_total", outcome="expired", via="expiry"
    ) >= len(downtime)
    assert not any(
        json.dumps(r).count('"Denied"') for r in operator.audit_records() if r["event"] == "expired"
    )
