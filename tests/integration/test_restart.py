"""kill -9 the operator at several points while a batch of requests is created and decided:
after a restart every request reaches the right phase, with exactly one `requested`, one
`notified` and one terminal audit record, one notification entry, and an intact audit chain."""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.auditfiles import snapshot
from tests.support.concurrency import at_once
from tests.support.identities import cli_for
from tests.support.kubectl import Kubectl
from tests.support.manifests import annotate, approval_request, get, poll, wait_phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.devcluster import ControlPlane

APPROVE = "greenlight.dev/decision=approve"
DENY = ("greenlight.dev/decision=deny", "greenlight.dev/reason=not now")
CANCEL = "greenlight.dev/cancel=true"

# name -> (required approvals, the decisions to make as (user, annotations...), final phase)
PLAN: dict[str, tuple[int, list[tuple[str, ...]], str]] = {
    **{f"approve-{i}": (1, [("alice", APPROVE)], "Approved") for i in range(4)},
    **{f"quorum-{i}": (2, [("alice", APPROVE), ("bob", APPROVE)], "Approved") for i in range(2)},
    **{f"deny-{i}": (1, [("bob", *DENY)], "Denied") for i in range(2)},
    **{f"cancel-{i}": (1, [("requester", CANCEL)], "Cancelled") for i in range(2)},
    **{f"open-{i}": (1, [], "Pending") for i in range(2)},
}

TERMINAL_EVENTS = {"decided", "expired", "cancelled"}


def decide(
    kubectl: Kubectl, people: People, name: str, step: tuple[str, ...]
) -> tuple[str, tuple[str, ...], int]:
    user = people.orchestrator if step[0] == "requester" else step[0]
    done = annotate(kubectl, people.namespace, name, *step[1:], as_user=user)
    return name, step, done.returncode


def burst(
    kubectl: Kubectl, people: People, steps: list[tuple[str, tuple[str, ...]]]
) -> list[tuple[str, tuple[str, ...], int]]:
    return at_once(*(functools.partial(decide, kubectl, people, n, s) for n, s in steps))


def test_kill_9_at_several_points_loses_and_doubles_nothing(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    ns = people.namespace
    batch = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            approval_request(name, ns, policy={"requiredApprovals": approvals})
            for name, (approvals, _, _) in PLAN.items()
        ],
    }
    kubectl("create", "-f", "-", input=json.dumps(batch), as_user=people.orchestrator)
    operator.kill()  # 1: while the batch is being reconciled and notified
    operator.start()

    first = [(name, steps[0]) for name, (_, steps, _) in PLAN.items() if steps]
    retry: list[tuple[str, tuple[str, ...]]] = []
    results = burst(kubectl, people, first[:3])
    operator.kill()  # 2: right after the first decisions were admitted, while others arrive
    results += burst(kubectl, people, first[3:])
    retry += [(name, step) for name, step, code in results if code != 0]
    operator.start()

    results = burst(kubectl, people, retry)
    assert all(code == 0 for _, _, code in results), results
    second = [(name, steps[1]) for name, (_, steps, _) in PLAN.items() if len(steps) > 1]
    assert all(code == 0 for _, _, code in burst(kubectl, people, second))
    operator.kill()  # 3: the last decisions are recorded, their transitions may be in flight
    operator.start()

    objects: dict[str, dict[str, Any]] = {}
    for name, (_, _, phase) in PLAN.items():
        objects[name] = wait_phase(kubectl, ns, name, phase, timeout=30)
    for name in PLAN:
        objects[name] = wait_notified_once(kubectl, ns, name)

    by_uid = {obj["metadata"]["uid"]: name for name, obj in objects.items()}
    events: dict[str, Counter[str]] = {name: Counter() for name in PLAN}
    for record in operator.audit_records():
        requested = by_uid.get((record.get("request") or {}).get("uid"))
        if requested is not None:
            events[requested][record["event"]] += 1
    for name, (_, _, phase) in PLAN.items():
        assert events[name]["requested"] == 1, (name, events[name])
        assert events[name]["notified"] == 1, (name, events[name])
        terminal = sum(events[name][e] for e in TERMINAL_EVENTS)
        assert terminal == (0 if phase == "Pending" else 1), (name, events[name])
    for name in ("quorum-0", "quorum-1"):
        approvals = objects[name]["status"]["approvals"]
        assert sorted(a["user"] for a in approvals) == ["alice", "bob"]

    copy = snapshot(operator.audit_file, tmp_path / "audit")
    verified = cli_for(control_plane)(
        "audit", "verify", str(copy), "--key-file", str(operator.audit_key_file)
    )
    assert verified.returncode == 0, verified.stderr


def wait_notified_once(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    """The request once its notification is settled: exactly one entry, sent or resolved."""

    def settled() -> dict[str, Any] | None:
        obj = get(kubectl, ns, name)
        entries = obj["status"].get("notifications") or []
        want = "sent" if obj["status"]["phase"] == "Pending" else "resolved"
        return obj if [e["state"] for e in entries] == [want] else None

    obj: dict[str, Any] = poll(settled, timeout=20)
    return obj
