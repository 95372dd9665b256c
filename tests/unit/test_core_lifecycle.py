"""The ApprovalRequest state machine (`lifecycle.reconcile`), as plain data in and out."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.support.marks import KEY, reconcile, signed, stamp

from greenlight.core import lifecycle
from greenlight.core import request as core_request
from greenlight.core.model import ANN_REQUESTED_BY, DECISION_RECORD_PREFIX, Action, Phase, Via
from greenlight.core.stamps import DecisionRecord, plan_digest, record_key

CREATED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
REQUESTER = "system:serviceaccount:ci:orchestrator"


def record(
    user: str,
    action: Action = Action.APPROVE,
    *,
    after: timedelta = timedelta(minutes=1),
    reason: str = "",
    groups: Sequence[str] = (),
) -> DecisionRecord:
    return DecisionRecord(
        user=user,
        action=action,
        at=CREATED + after,
        via=Via.KUBECTL,
        reason=reason,
        groups=tuple(groups),
    )


def request(
    *records: DecisionRecord,
    timeout: str | None = "30m",
    approvals: int = 1,
    details: str = "-12 resources",
    on_behalf_of: str = "",
    approvers: Mapping[str, list[str]] | None = None,
    status: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    annotations: dict[str, str] = dict(signed(r, "uid-1") for r in records)
    spec: dict[str, Any] = {
        "action": "pulumi destroy",
        "target": "production",
        "requester": {
            "workflowId": "wf-1",
            **({"onBehalfOf": on_behalf_of} if on_behalf_of else {}),
        },
        "plan": {"summary": "-12", "details": details},
        "policy": {
            "requiredApprovals": approvals,
            **({"approvers": approvers} if approvers else {}),
        },
    }
    if timeout is not None:
        spec["timeout"] = timeout
    obj: dict[str, Any] = {
        "metadata": {
            "namespace": "ci",
            "name": "destroy-prod",
            "uid": "uid-1",
            "creationTimestamp": "2026-03-01T12:00:00Z",
            "annotations": annotations,
        },
        "spec": spec,
    }
    annotations[ANN_REQUESTED_BY] = stamp(obj, REQUESTER)
    if status is not None:
        obj["status"] = dict(status)
    return obj


def settle(obj: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The object after the operator wrote the status `reconcile` returned."""
    return {**obj, "status": reconcile(obj, now).status}


def with_records(obj: dict[str, Any], *records: DecisionRecord) -> dict[str, Any]:
    updated = copy.deepcopy(obj)
    updated["metadata"]["annotations"].update(dict(signed(r, "uid-1") for r in records))
    return updated


NOW = CREATED + timedelta(minutes=2)


def test_new_request_becomes_pending_with_expiry_digest_and_conditions() -> None:
    transition = reconcile(request(details="the plan"), CREATED)

    status = transition.status
    assert status["phase"] == "Pending"
    assert status["requestedBy"] == REQUESTER
    assert status["expiresAt"] == "2026-03-01T12:30:00Z"
    assert status["planDigest"] == plan_digest("the plan")
    assert status["planDigest"].startswith("sha256:")
    assert len(status["planDigest"]) == 7 + 64
    assert status["approvals"] == []
    assert status["notifications"] == []
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Notified"]["status"] == "Unknown"
    assert conditions["Decided"]["status"] == "False"
    assert transition.entered is Phase.PENDING
    assert [(e.event, e.actor, e.event_id) for e in transition.audit] == [
        ("requested", REQUESTER, "uid-1:requested")
    ]


def test_timeout_defaults_to_one_hour() -> None:
    status = reconcile(request(timeout=None), CREATED).status

    assert status["expiresAt"] == "2026-03-01T13:00:00Z"


def test_one_approval_approves_when_one_is_required() -> None:
    transition = reconcile(request(record("alice", reason="looks fine")), NOW)

    decision = transition.status["decision"]
    assert transition.status["phase"] == "Approved"
    assert decision == {
        "outcome": "Approved",
        "by": "alice",
        "at": "2026-03-01T12:01:00Z",
        "via": "kubectl",
        "reason": "looks fine",
    }
    assert transition.entered is Phase.APPROVED
    assert [e.event for e in transition.audit] == ["requested", "decision_attempted", "decided"]
    assert transition.audit[1].outcome == "allowed"
    assert transition.audit[-1].event_id == "uid-1:terminal"


@pytest.mark.parametrize(
    ("approvers", "approvals", "phase", "counted"),
    [
        (["alice"], 2, "Pending", ["alice"]),
        (["alice", "bob"], 2, "Approved", ["alice", "bob"]),
        (["alice", "bob"], 3, "Pending", ["alice", "bob"]),
        (["alice", "bob", "carol"], 3, "Approved", ["alice", "bob", "carol"]),
    ],
)
def test_quorum_counts_distinct_approvers(
    approvers: list[str], approvals: int, phase: str, counted: list[str]
) -> None:
    records = [record(u, after=timedelta(seconds=10 + i)) for i, u in enumerate(approvers)]

    status = reconcile(request(*records, approvals=approvals), NOW).status

    assert status["phase"] == phase
    assert [a["user"] for a in status["approvals"]] == counted


def test_same_user_approving_again_counts_once() -> None:
    first = settle(request(record("alice"), approvals=2), NOW)
    again = with_records(first, record("alice", after=timedelta(minutes=1, seconds=30)))

    status = reconcile(again, NOW).status

    assert status["phase"] == "Pending"
    assert [a["user"] for a in status["approvals"]] == ["alice"]


def test_two_records_of_one_user_under_different_keys_count_once() -> None:
    obj = request(approvals=2)
    obj["metadata"]["annotations"][DECISION_RECORD_PREFIX + "a"] = signed(record("alice"), "uid-1")[
        1
    ]
    obj["metadata"]["annotations"][DECISION_RECORD_PREFIX + "b"] = signed(
        record("alice", after=timedelta(seconds=70)), "uid-1"
    )[1]

    status = reconcile(obj, NOW).status

    assert status["phase"] == "Pending"
    assert [a["user"] for a in status["approvals"]] == ["alice"]


def test_one_deny_ends_a_quorum_request() -> None:
    obj = request(
        record("alice"),
        record("bob", Action.DENY, after=timedelta(seconds=90), reason="wrong stack"),
        approvals=3,
    )

    transition = reconcile(obj, NOW)

    assert transition.status["phase"] == "Denied"
    assert transition.status["decision"]["by"] == "bob"
    assert transition.status["decision"]["reason"] == "wrong stack"
    assert [a["user"] for a in transition.status["approvals"]] == ["alice"]
    assert transition.audit[-1].event == "decided"
    assert transition.audit[-1].outcome == "Denied"


def test_first_decision_wins_when_deny_and_approve_arrive_together() -> None:
    obj = request(
        record("bob", Action.DENY, after=timedelta(seconds=30), reason="no"),
        record("alice", after=timedelta(seconds=31)),
    )

    transition = reconcile(obj, NOW)

    assert transition.status["phase"] == "Denied"
    late = [e for e in transition.audit if e.event == "decision_attempted"]
    assert [(e.actor, e.outcome, e.reason) for e in late] == [
        ("bob", "allowed", ""),
        ("alice", "refused", "already_decided"),
    ]


def test_cancel_by_the_requester_cancels() -> None:
    obj = request(record(REQUESTER, Action.CANCEL, reason="not needed"))

    transition = reconcile(obj, NOW)

    assert transition.status["phase"] == "Cancelled"
    assert transition.status["decision"]["by"] == REQUESTER
    assert transition.audit[-1].event == "cancelled"


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (record("bob", Action.DENY, reason="  "), "reason_required"),
        (record(REQUESTER), "self_approval"),
        (record("mallory"), "not_in_approvers"),
        (record("alice", after=timedelta(minutes=31)), "already_decided"),
    ],
    ids=["deny-without-reason", "self-approval", "not-in-approvers", "after-expiry"],
)
def test_record_that_breaks_policy_never_takes_effect(bad: DecisionRecord, code: str) -> None:
    obj = request(bad, approvers={"users": ["alice", "bob", REQUESTER]})

    transition = reconcile(obj, NOW)

    assert transition.status["phase"] == "Pending"
    refused = [e for e in transition.audit if e.event == "decision_attempted"]
    assert [(e.actor, e.outcome, e.reason) for e in refused] == [(bad.user, "refused", code)]


def test_approval_by_group_in_policy_approvers_counts() -> None:
    obj = request(record("dave", groups=["sre"]), approvers={"groups": ["sre"]})

    assert reconcile(obj, NOW).status["phase"] == "Approved"


def test_self_approval_through_on_behalf_of_never_takes_effect() -> None:
    obj = request(record("alice"), on_behalf_of="alice")

    assert reconcile(obj, NOW).status["phase"] == "Pending"


def test_pending_request_expires_exactly_at_expires_at() -> None:
    created = settle(request(timeout="1m"), CREATED)
    expires = CREATED + timedelta(minutes=1)

    before = reconcile(created, expires - timedelta(microseconds=1))
    at = reconcile(created, expires)

    assert before.status == created["status"]
    assert before.audit == ()
    assert at.status["phase"] == "Expired"
    assert at.status["decision"] == {
        "outcome": "Expired",
        "by": lifecycle.OPERATOR_IDENTITY,
        "at": "2026-03-01T12:01:00Z",
        "via": "expiry",
        "reason": "no decision before the timeout",
    }
    assert [(e.event, e.outcome) for e in at.audit] == [("expired", "Expired")]


def test_request_found_long_after_its_expiry_expires_at_expires_at() -> None:
    """The operator was down at expiresAt: it catches up with the original time, not `now`."""
    transition = reconcile(request(timeout="1m"), CREATED + timedelta(days=3))

    assert transition.status["phase"] == "Expired"
    assert transition.status["decision"]["at"] == "2026-03-01T12:01:00Z"
    assert [e.event for e in transition.audit] == ["requested", "expired"]


def test_approval_recorded_before_expiry_wins_over_a_late_reconcile() -> None:
    """A decision admitted in time is honoured even when the operator reconciles after expiry."""
    obj = request(record("alice", after=timedelta(seconds=59)), timeout="1m")

    status = reconcile(obj, CREATED + timedelta(minutes=5)).status

    assert status["phase"] == "Approved"


TERMINAL = {
    "Approved": request(record("alice")),
    "Denied": request(record("bob", Action.DENY, reason="no")),
    "Cancelled": request(record(REQUESTER, Action.CANCEL)),
    "Expired": request(timeout="1m"),
}


@pytest.mark.parametrize("phase", sorted(TERMINAL))
def test_terminal_phase_never_changes(phase: str) -> None:
    final = settle(TERMINAL[phase], CREATED + timedelta(minutes=40))
    assert final["status"]["phase"] == phase
    later = with_records(
        final,
        record("carol", after=timedelta(minutes=35)),
        record("dave", Action.DENY, after=timedelta(minutes=36), reason="late"),
        record(REQUESTER, Action.CANCEL, after=timedelta(minutes=37)),
    )

    transition = reconcile(later, CREATED + timedelta(days=8))

    assert transition.status == final["status"]
    assert transition.entered is None
    assert not transition.changes(later)


SCENARIOS = {
    "created": request(),
    "one-of-two-approvals": request(record("alice"), approvals=2),
    "approved": request(record("alice")),
    "denied-with-late-approval": request(
        record("bob", Action.DENY, reason="no"), record("alice", after=timedelta(seconds=61))
    ),
    "cancelled": request(record(REQUESTER, Action.CANCEL)),
    "expired": request(timeout="1m"),
    "refused-record": request(record(REQUESTER)),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_reconcile_twice_changes_nothing_the_second_time(name: str) -> None:
    once = settle(SCENARIOS[name], NOW)

    again = reconcile(once, NOW)

    assert again.status == once["status"]
    assert not again.changes(once)
    assert again.entered is None
    assert all(e.event == "decision_attempted" for e in again.audit)


def test_late_record_after_terminal_is_audited_once_as_refused() -> None:
    approved = settle(request(record("alice")), NOW)
    late = with_records(approved, record("bob", Action.DENY, reason="too late"))

    first = reconcile(late, NOW)
    second = reconcile({**late, "status": first.status}, NOW + timedelta(minutes=1))

    assert first.status == approved["status"]
    [entry] = first.audit
    assert (entry.event, entry.actor, entry.outcome, entry.reason) == (
        "decision_attempted",
        "bob",
        "refused",
        "already_decided",
    )
    assert entry.details["message"] == "ci/destroy-prod is already Approved by alice"
    assert [e.event_id for e in second.audit] == [entry.event_id]


def test_record_not_issued_by_greenlight_is_never_counted_and_is_audited() -> None:
    obj = request()
    forged = record("alice", reason="planted")
    obj["metadata"]["annotations"][record_key("alice")] = forged.to_annotation()  # no MAC
    copied = request(record("bob"))
    copied["metadata"]["uid"] = "uid-2"  # a valid record of another object

    planted = reconcile(obj, NOW)
    moved = reconcile(copied, NOW)

    assert planted.status["phase"] == moved.status["phase"] == "Pending"
    assert planted.status["approvals"] == moved.status["approvals"] == []
    [entry] = [e for e in planted.audit if e.event == "decision_attempted"]
    assert (entry.outcome, entry.reason) == ("refused", "untrusted_record")


def test_request_without_a_greenlight_stamp_is_never_decided() -> None:
    obj = request(record("alice"))
    obj["metadata"]["annotations"][ANN_REQUESTED_BY] = json.dumps({"user": "x", "groups": []})

    transition = reconcile(obj, NOW)

    assert transition.status["phase"] == "Pending"
    assert transition.status["requestedBy"] == ""
    conditions = {c["type"]: c for c in transition.status["conditions"]}
    assert conditions["Verified"]["status"] == "False"
    assert conditions["Verified"]["reason"] == "UnverifiedRequester"
    refused = [e for e in transition.audit if e.event == "decision_attempted"]
    assert [(e.actor, e.reason) for e in refused] == [("alice", "unverified_request")]
    assert reconcile(obj, CREATED + timedelta(hours=1)).status["phase"] == "Expired"


def test_stamp_copied_from_an_older_request_is_not_valid() -> None:
    obj = request()
    obj["metadata"]["creationTimestamp"] = "2026-03-01T12:05:00Z"  # 5 minutes after the stamp

    status = reconcile(obj, NOW).status

    assert status["requestedBy"] == ""


def test_malformed_decision_record_is_ignored() -> None:
    obj = request()
    obj["metadata"]["annotations"][DECISION_RECORD_PREFIX + "x"] = '{"user": "alice"}'
    obj["metadata"]["annotations"][DECISION_RECORD_PREFIX + "y"] = "not json"

    assert reconcile(obj, NOW).status["phase"] == "Pending"


def test_decision_record_round_trips_through_its_annotation() -> None:
    original = record("alice", Action.DENY, reason="no", groups=["sre", "oncall"])

    assert DecisionRecord.from_annotation(original.to_annotation()) == original


@pytest.mark.parametrize("user", ["alice", "system:serviceaccount:ci:bot", "Ålice@example.com"])
def test_record_key_is_a_valid_annotation_key_per_user(user: str) -> None:
    key = record_key(user)
    prefix, name = key.split("/")

    assert prefix == "decisions.greenlight.dev"
    assert len(name) <= 63
    assert name.isalnum()
    assert key == record_key(user) != record_key(user + "x")


def test_only_stamps_whose_mac_verifies_are_kept_and_without_their_text() -> None:
    obj = request()
    core_request._stamps.clear()
    for junk in ("x" * 100_000, "y" * 100_000):
        forged = copy.deepcopy(obj)
        forged["metadata"]["annotations"][ANN_REQUESTED_BY] = junk
        assert core_request.Request.parse(forged, KEY).marks.stamp is None
    assert core_request._stamps == {}  # a forged stamp is never kept

    for _ in range(3):
        assert core_request.Request.parse(obj, KEY).marks.stamp is not None
    assert len(core_request._stamps) == 1
    assert all(len(digest) == 32 for digest, *_ in core_request._stamps)


@pytest.mark.parametrize(
    "key", [ANN_REQUESTED_BY, DECISION_RECORD_PREFIX + "x", "greenlight.dev/execution"]
)
def test_a_mark_nested_too_deeply_to_parse_is_a_malformed_mark(key: str) -> None:
    """Planted while no webhook covered the object: before, the RecursionError escaped the
    parse and stopped every list of the requests."""
    obj = request()
    obj["metadata"]["annotations"][key] = "[" * 100_000

    marks = core_request.Request.parse(obj, KEY).marks  # raises nothing

    if key == ANN_REQUESTED_BY:
        assert marks.stamp is None
    else:
        assert key in marks.untrusted
        assert (marks.records, marks.execution) == ((), None)
