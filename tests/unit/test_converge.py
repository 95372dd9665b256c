"""The reconciler in-process (adapters/converge.py and announce.py): a fake API server
(tests/support/fakekube.py), a real audit log on disk, and a notifier that records what it
was asked to send. Watch events are delivered to `Converger.on_event` as the request watch
(adapters/watch.py) would."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.support.fakekube import FakeKube, create_request
from tests.support.marks import KEY, signed

from greenlight.adapters import converge as converge_module
from greenlight.adapters.announce import NOTIFY_RETRY, Announcer
from greenlight.adapters.auditlog import AuditLog
from greenlight.adapters.converge import AUDIT_RETRY, Converger
from greenlight.adapters.decisions import DecisionService
from greenlight.adapters.notifiers import FollowUp, NotificationRef, NotifierError
from greenlight.adapters.refusals import RefusalLog
from greenlight.core.model import Action, Phase, RequestView, Via
from greenlight.core.request import ConditionStatus, ConditionType, Request
from greenlight.core.stamps import DecisionRecord, record_key
from greenlight.core.timefmt import now
from greenlight.telemetry import metrics

NS = "ci"
NAME = "destroy-prod"


class RecordingNotifier:
    """A Notifier that keeps what it announced and resolved; `failing` makes it fail."""

    name = "console"
    immediate = True

    def __init__(self) -> None:
        self.announced: list[RequestView] = []
        self.resolved: list[tuple[RequestView, NotificationRef]] = []
        self.reminded: list[tuple[RequestView, FollowUp]] = []
        self.failing = ""
        self.tries: list[bool] = []  # each call's `fresh`

    def channels(self, request: RequestView) -> tuple[str, ...]:
        return ("console",)

    async def notify(
        self, request: RequestView, channel: str | None = None, *, fresh: bool = False
    ) -> NotificationRef:
        self.tries.append(fresh)
        if self.failing:
            raise NotifierError(self.failing)
        self.announced.append(request)
        return NotificationRef("console", f"message-{len(self.announced)}")

    async def resolve(self, request: RequestView, ref: NotificationRef) -> None:
        if self.failing:
            raise NotifierError(self.failing)
        self.resolved.append((request, ref))

    async def remind(self, request: RequestView, ref: NotificationRef, note: FollowUp) -> None:
        self.reminded.append((request, note))


@dataclass
class Rig:
    kube: FakeKube
    audit: AuditLog
    notifier: RecordingNotifier
    converger: Converger
    delivered: int = 0

    async def deliver(self) -> int:
        """Hand every watch event not yet seen to the converger, as the request watch would, until
        no new ones come; returns how many were delivered."""
        start = self.delivered
        while self.delivered < len(self.kube.events):
            event = self.kube.events[self.delivered]
            self.delivered += 1
            await self.converger.on_event(event.type, event.body)
            assert self.delivered - start < 50, "the converger keeps writing: an event storm"
        return self.delivered - start

    def records(self, event: str | None = None, uid: str | None = None) -> list[dict[str, Any]]:
        if not self.audit.path.exists():
            return []
        lines = self.audit.path.read_text(encoding="utf-8").splitlines()
        found = [json.loads(line) for line in lines]
        return [
            r
            for r in found
            if (event is None or r["event"] == event)
            and (uid is None or (r["request"] or {}).get("uid") == uid)
        ]

    def request(self, name: str = NAME) -> Request:
        return Request.parse(self.kube.stored(NS, name), KEY)

    def reasons_posted(self) -> list[str]:
        return [event.reason for event in self.kube.posted]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    kube = FakeKube()
    audit = AuditLog(tmp_path / "audit.log", key=b"k" * 32)
    notifier = RecordingNotifier()
    converger = Converger(kube, audit, Announcer(kube, audit, [notifier], KEY), KEY)
    yield Rig(kube, audit, notifier, converger)
    audit.close()


def approval(
    user: str, uid: str, action: Action = Action.APPROVE, reason: str = ""
) -> dict[str, str]:
    """The decision record annotation the webhook leaves for `user` (signed, bound to `uid`)."""
    record = DecisionRecord(user=user, action=action, at=now(), via=Via.KUBECTL, reason=reason)
    key, value = signed(record, uid)
    return {key: value}


def pending_gauge() -> float | None:
    return metrics.OPERATOR_REGISTRY.get_sample_value("greenlight_requests_pending")


def counter(name: str) -> float:
    return metrics.OPERATOR_REGISTRY.get_sample_value(name) or 0.0


async def ring(rig: Rig, name: str = NAME) -> None:
    """Let the clock fire for `name` now (as it would at its due time) and run briefly."""
    rig.converger.clock.arm(time.time(), NS, name)
    clock = asyncio.create_task(rig.converger.clock.run())
    await asyncio.sleep(0.2)
    clock.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await clock


def condition(request: Request, kind: ConditionType) -> tuple[ConditionStatus, str]:
    found = request.status.condition(kind)
    assert found is not None, f"no {kind.value} condition in {request.status}"
    return found.status, found.reason


async def test_a_new_request_is_pending_announced_once_and_audited(rig: Rig) -> None:
    created_before = counter("greenlight_requests_created_total")
    body = create_request(rig.kube, NS, NAME)
    uid = body["metadata"]["uid"]

    await rig.deliver()

    request = rig.request()
    assert request.status.phase is Phase.PENDING
    assert request.status.requested_by == "alice"
    assert condition(request, ConditionType.NOTIFIED) == (ConditionStatus.TRUE, "Sent")
    assert [n.ref for n in request.status.notifications] == ["message-1"]
    assert [v.uid for v in rig.notifier.announced] == [uid]
    assert [r["event"] for r in rig.records(uid=uid)] == ["requested", "notified"]
    requested = rig.records("requested")[0]
    assert requested["actor"] == "alice"
    assert requested["outcome"] == "accepted"
    assert requested["details"]["spec"]["action"] == "pulumi destroy"
    assert counter("greenlight_requests_created_total") == created_before + 1
    assert rig.converger.clock.due(NS, NAME) == request.expires_at.timestamp()
    assert pending_gauge() == 1
    assert rig.reasons_posted() == ["Requested"]


async def test_an_echo_of_the_operators_own_writes_costs_nothing(rig: Rig) -> None:
    create_request(rig.kube, NS, NAME)
    await rig.deliver()
    request = rig.request()
    calls, announced = len(rig.kube.calls), len(rig.notifier.announced)

    for event in list(rig.kube.events):  # late and repeated events
        await rig.converger.on_event(event.type, event.body)

    assert rig.converger.ledger.stale(request.uid, request.resource_version)
    assert len(rig.kube.calls) == calls
    assert len(rig.notifier.announced) == announced == 1
    assert rig.request().resource_version == request.resource_version


async def test_a_signed_approval_approves_and_resolves_the_announcement(rig: Rig) -> None:
    uid = create_request(rig.kube, NS, NAME)["metadata"]["uid"]
    await rig.deliver()

    rig.kube.touch(NS, NAME, **approval("bob", uid))
    await rig.deliver()

    request = rig.request()
    assert request.status.phase is Phase.APPROVED
    assert request.status.decision is not None
    assert (request.status.decision.by, request.status.decision.via) == ("bob", Via.KUBECTL)
    assert [a.user for a in request.status.approvals] == ["bob"]
    assert condition(request, ConditionType.DECIDED) == (ConditionStatus.TRUE, "Approved")
    assert [n.state.value for n in request.status.notifications] == ["resolved"]
    assert [(v.uid, ref.ref) for v, ref in rig.notifier.resolved] == [(uid, "message-1")]
    attempts = rig.records("decision_attempted", uid)
    assert [(r["actor"], r["outcome"]) for r in attempts] == [("bob", "allowed")]
    decided = rig.records("decided", uid)
    assert [(r["actor"], r["outcome"]) for r in decided] == [("bob", "Approved")]
    assert rig.converger.clock.due(NS, NAME) is None
    assert pending_gauge() == 0
    assert rig.reasons_posted() == ["Requested", "Approved"]


async def test_an_immediate_notifiers_outcome_is_written_with_the_decision_and_shown_after(
    rig: Rig,
) -> None:
    """With the console alone a decision is one status write: the message is marked resolved
    in it, and printed once that write succeeded (it shows the decided request)."""
    uid = create_request(rig.kube, NS, NAME)["metadata"]["uid"]
    await rig.deliver()
    shown_phase: list[str] = []
    rig.kube.intercept("patch_status", lambda: shown_phase.append(str(len(rig.notifier.resolved))))
    writes = rig.kube.calls.count("patch_status")

    rig.kube.touch(NS, NAME, **approval("bob", uid))
    await rig.deliver()

    assert rig.kube.calls.count("patch_status") == writes + 1
    assert shown_phase == ["0"]  # nothing was shown before the write
    assert [(v.phase, ref.ref) for v, ref in rig.notifier.resolved] == [
        (Phase.APPROVED, "message-1")
    ]
    assert [n.state.value for n in rig.request().status.notifications] == ["resolved"]


async def test_a_conflict_on_the_decisions_write_shows_the_outcome_once(rig: Rig) -> None:
    uid = create_request(rig.kube, NS, NAME)["metadata"]["uid"]
    await rig.deliver()
    rig.kube.touch(NS, NAME, **approval("bob", uid))
    rig.kube.intercept("patch_status", lambda: rig.kube.touch(NS, NAME))

    await rig.deliver()

    assert rig.request().status.phase is Phase.APPROVED
    assert len(rig.notifier.resolved) == 1
    assert len(rig.records("decided", uid)) == 1


async def test_a_remote_notifiers_outcome_is_shown_before_it_is_recorded(rig: Rig) -> None:
    """A chat notifier's message is updated first and recorded after (a second write): what
    the status says happened, happened."""
    rig.notifier.immediate = False
    uid = create_request(rig.kube, NS, NAME)["metadata"]["uid"]
    await rig.deliver()
    shown_at_write: list[int] = []
    rig.kube.touch(NS, NAME, **approval("bob", uid))
    writes = rig.kube.calls.count("patch_status")
    for _ in range(2):
        rig.kube.intercept(
            "patch_status", lambda: shown_at_write.append(len(rig.notifier.resolved))
        )

    await rig.deliver()

    assert rig.kube.calls.count("patch_status") == writes + 2
    assert shown_at_write[:2] == [0, 1]  # decided, then resolved and recorded
    assert [n.state.value for n in rig.request().status.notifications] == ["resolved"]


async def test_a_conflict_on_the_first_status_write_rereads_and_transitions_once(
    rig: Rig,
) -> None:
    created_before = counter("greenlight_requests_created_total")
    create_request(rig.kube, NS, NAME)
    rig.kube.intercept("patch_status", lambda: rig.kube.touch(NS, NAME))

    await rig.deliver()

    request = rig.request()
    assert request.status.phase is Phase.PENDING
    assert rig.kube.calls.count("get") == 1  # the re-read after the conflict
    assert len(rig.notifier.announced) == 1
    assert len(request.status.notifications) == 1
    assert len(rig.records("requested")) == 1
    assert counter("greenlight_requests_created_total") == created_before + 1
    assert rig.reasons_posted() == ["Requested"]


async def test_a_conflict_when_recording_the_announcement_never_sends_it_twice(rig: Rig) -> None:
    """A new request is written once, Pending and announced; when that write loses a race, the
    announcement already sent is recorded on the fresh object, not sent again."""
    create_request(rig.kube, NS, NAME)
    rig.kube.intercept("patch_status", lambda: rig.kube.touch(NS, NAME, **{"x.example/y": "z"}))

    await rig.deliver()

    request = rig.request()
    assert len(rig.notifier.announced) == 1
    assert [n.ref for n in request.status.notifications] == ["message-1"]
    assert condition(request, ConditionType.NOTIFIED) == (ConditionStatus.TRUE, "Sent")
    assert rig.kube.stored(NS, NAME)["metadata"]["annotations"]["x.example/y"] == "z"


async def test_a_notifier_failure_is_shown_and_retried_without_raising(rig: Rig) -> None:
    rig.notifier.failing = "slack is unreachable"
    create_request(rig.kube, NS, NAME)

    await rig.deliver()

    request = rig.request()
    assert request.status.phase is Phase.PENDING
    notified = request.status.condition(ConditionType.NOTIFIED)
    assert notified is not None
    assert (notified.status, notified.reason) == (ConditionStatus.FALSE, "NotifierUnavailable")
    assert "slack is unreachable" in notified.message
    due = rig.converger.clock.due(NS, NAME)
    assert due is not None
    assert abs(due - (time.time() + NOTIFY_RETRY)) < 2
    assert due < request.expires_at.timestamp()

    rig.notifier.failing = ""
    await ring(rig)

    request = rig.request()
    assert condition(request, ConditionType.NOTIFIED) == (ConditionStatus.TRUE, "Sent")
    assert len(rig.notifier.announced) == 1
    assert len(rig.records("notified")) == 1
    assert rig.converger.clock.due(NS, NAME) == request.expires_at.timestamp()


@pytest.mark.parametrize("immediate", [True, False])
async def test_only_the_first_try_for_a_request_created_while_watched_is_fresh(
    rig: Rig, immediate: bool
) -> None:
    """A request whose ADDED event this replica saw cannot have been announced by anyone
    before its first try; every later try may follow one that reached the chat."""
    rig.notifier.immediate = immediate
    rig.notifier.failing = "slack is unreachable"
    uid = create_request(rig.kube, NS, NAME)["metadata"]["uid"]

    await rig.deliver()
    rig.notifier.failing = ""
    await ring(rig)

    assert rig.notifier.tries == [True, False]
    assert len(rig.notifier.announced) == 1
    assert uid not in rig.converger.announcer._fresh


async def test_a_request_found_by_a_list_is_never_announced_as_fresh(rig: Rig) -> None:
    """Listed (at start, after a gap in the watch, on taking over from another replica): an
    earlier operator may have posted its message and died before recording it."""
    rig.notifier.immediate = False
    create_request(rig.kube, NS, NAME)
    rig.delivered = len(rig.kube.events)  # the watch never showed it

    await rig.converger.reconcile(NS, NAME)

    assert rig.notifier.tries == [False]
    assert rig.request().status.phase is Phase.PENDING


async def test_an_added_event_for_a_request_a_list_showed_is_not_fresh(rig: Rig) -> None:
    body = create_request(rig.kube, NS, NAME)
    assert rig.converger.listed(body)  # shown by a list first, still to do

    await rig.deliver()  # then its ADDED event

    assert rig.notifier.tries == [False]


async def test_a_deleted_request_is_dropped_from_the_fresh_ones(rig: Rig) -> None:
    body = create_request(rig.kube, NS, NAME)
    rig.converger.announcer.born(body["metadata"]["uid"])  # seen, not yet told
    rig.converger.announcer.born("never-told")

    await rig.converger.on_event("DELETED", body)
    assert set(rig.converger.announcer._fresh) == {"never-told"}
    rig.converger.stand_by()  # another replica is in charge now
    assert rig.converger.announcer._fresh == {}


def fail_audit_writes(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rig.audit, "_commit", full_disk)


async def test_an_audit_failure_holds_the_decision_back_until_the_log_recovers(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = create_request(rig.kube, NS, NAME)["metadata"]["uid"]
    await rig.deliver()
    failures_before = counter("greenlight_audit_write_failures_total")
    fail_audit_writes(rig, monkeypatch)

    rig.kube.touch(NS, NAME, **approval("bob", uid))
    await rig.deliver()

    request = rig.request()
    assert request.status.phase is Phase.PENDING
    assert condition(request, ConditionType.AUDITED) == (ConditionStatus.FALSE, "AuditWriteFailed")
    due = rig.converger.clock.due(NS, NAME)
    assert due is not None
    assert abs(due - (time.time() + AUDIT_RETRY)) < 2
    assert rig.notifier.resolved == []
    assert counter("greenlight_audit_write_failures_total") > failures_before

    monkeypatch.undo()
    await ring(rig)

    request = rig.request()
    assert request.status.phase is Phase.APPROVED
    assert condition(request, ConditionType.AUDITED) == (ConditionStatus.TRUE, "AuditWritten")
    assert [r["event"] for r in rig.records(uid=uid)] == [
        "requested",
        "notified",
        "decision_attempted",
        "decided",
    ]
    assert len(rig.notifier.resolved) == 1


async def test_an_audit_failure_at_creation_writes_no_status_and_retries(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_audit_writes(rig, monkeypatch)
    create_request(rig.kube, NS, NAME)

    await rig.deliver()

    assert rig.request().status.phase is None
    assert "patch_status" not in rig.kube.calls
    assert rig.notifier.announced == []
    assert rig.converger.clock.due(NS, NAME) is not None

    monkeypatch.undo()
    await ring(rig)

    assert rig.request().status.phase is Phase.PENDING
    assert len(rig.notifier.announced) == 1
    assert [r["event"] for r in rig.records()] == ["requested", "notified"]


async def test_the_clock_expires_a_pending_request_at_its_time(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_request(rig.kube, NS, NAME, timeout="1h")
    await rig.deliver()
    expires = rig.request().expires_at
    assert rig.converger.clock.due(NS, NAME) == expires.timestamp()

    later = expires + timedelta(seconds=1)
    monkeypatch.setattr(converge_module, "now", lambda: later)
    await ring(rig)  # the wall clock reaches the expiry

    request = rig.request()
    assert request.status.phase is Phase.EXPIRED
    assert request.status.decision is not None
    assert request.status.decision.via is Via.EXPIRY
    assert [r["outcome"] for r in rig.records("expired")] == ["Expired"]
    assert rig.converger.clock.due(NS, NAME) is None
    assert len(rig.notifier.resolved) == 1


async def test_a_deleted_request_is_forgotten_and_its_deletion_audited(rig: Rig) -> None:
    doomed = create_request(rig.kube, NS, NAME)["metadata"]["uid"]
    create_request(rig.kube, NS, "other")
    await rig.deliver()
    assert pending_gauge() == 2
    rig.converger.ledger.deleting(doomed, "carol")  # the admission review of the DELETE

    rig.kube.delete(NS, NAME)
    await rig.deliver()

    assert pending_gauge() == 1
    assert rig.converger.ledger.locate(doomed) is None
    assert rig.converger.ledger.deleters(doomed) == ()
    assert rig.converger.clock.due(NS, NAME) is None
    assert rig.converger.clock.armed == 1
    (deleted,) = rig.records("deleted")
    assert (deleted["actor"], deleted["outcome"]) == ("carol", "deleted")
    assert deleted["request"]["uid"] == doomed
    assert deleted["request"]["name"] == NAME


async def test_a_deletion_several_callers_were_seen_asking_for_names_nobody_for_certain(
    rig: Rig,
) -> None:
    uid = create_request(rig.kube, NS, NAME)["metadata"]["uid"]
    await rig.deliver()
    rig.converger.ledger.deleting(uid, "carol")
    rig.converger.ledger.deleting(uid, "mallory")  # e.g. a review forged to the webhook port
    rig.converger.ledger.deleting(uid, "carol")
    rig.converger.ledger.deleting(uid, "m" * 5_000_000)  # what a forged review can name

    rig.kube.delete(NS, NAME)
    await rig.deliver()

    (deleted,) = rig.records("deleted", uid)
    assert deleted["actor"] == "unknown"
    assert deleted["details"]["named"] == ["carol", "mallory", "m" * 256 + "…"]


async def test_a_deletion_nobody_was_seen_asking_for_is_audited_as_unknown(rig: Rig) -> None:
    uid = create_request(rig.kube, NS, NAME)["metadata"]["uid"]
    await rig.deliver()

    rig.kube.delete(NS, NAME)
    await rig.deliver()

    (deleted,) = rig.records("deleted", uid)
    assert deleted["actor"] == "unknown"
    assert pending_gauge() == 0


async def test_a_recreated_request_ignores_the_old_ones_record_and_alarm(rig: Rig) -> None:
    old = create_request(rig.kube, NS, NAME, uid="uid-old")["metadata"]["uid"]
    await rig.deliver()
    rig.kube.delete(NS, NAME)
    await rig.deliver()

    new = create_request(rig.kube, NS, NAME, uid="uid-new")["metadata"]["uid"]
    await rig.deliver()
    rig.kube.touch(NS, NAME, **approval("bob", old))  # bob's record, copied from the old one
    await rig.deliver()
    new_expiry = rig.request().expires_at.timestamp()
    await ring(rig)  # an alarm left from the old object

    request = rig.request()
    assert request.uid == new
    assert request.status.phase is Phase.PENDING
    assert request.status.approvals == ()
    assert request.marks.untrusted == (record_key("bob"),)
    refused = rig.records("decision_attempted", new)
    assert [(r["outcome"], r["reason"]) for r in refused] == [("refused", "untrusted_record")]
    assert rig.records("decided") == []
    assert rig.records("expired") == []
    assert rig.converger.clock.due(NS, NAME) == new_expiry
    rig.converger.ledger.listed.set()
    decisions = DecisionService(rig.kube, RefusalLog(rig.audit), rig.converger.ledger, KEY)
    assert await decisions.find_request_by_uid(old) is None
    found = await decisions.find_request_by_uid(new)
    assert found is not None
    assert found.uid == new


async def test_an_unstamped_request_is_marked_unverified_and_never_approved(rig: Rig) -> None:
    uid = create_request(rig.kube, NS, NAME, requester=None)["metadata"]["uid"]
    await rig.deliver()
    request = rig.request()
    assert condition(request, ConditionType.VERIFIED) == (
        ConditionStatus.FALSE,
        "UnverifiedRequester",
    )
    assert rig.records("requested")[0]["outcome"] == "unverified"

    rig.kube.touch(NS, NAME, **approval("bob", uid))
    await rig.deliver()

    request = rig.request()
    assert request.status.phase is Phase.PENDING
    assert request.status.approvals == ()
    refused = rig.records("decision_attempted", uid)
    assert [(r["actor"], r["reason"]) for r in refused] == [("bob", "unverified_request")]
    assert rig.records("decided") == []


async def test_an_untrusted_record_is_audited_once_and_ignored(rig: Rig) -> None:
    uid = create_request(rig.kube, NS, NAME)["metadata"]["uid"]
    await rig.deliver()
    planted = DecisionRecord(user="bob", action=Action.APPROVE, at=now(), via=Via.KUBECTL)
    forged = planted.signed(b"not the operator's key", uid)

    rig.kube.touch(NS, NAME, **{record_key("bob"): planted.to_annotation()})
    await rig.deliver()
    rig.kube.touch(NS, NAME, **{record_key("mallory"): forged.to_annotation()})
    await rig.deliver()
    rig.kube.touch(NS, NAME)
    await rig.deliver()

    request = rig.request()
    assert request.status.phase is Phase.PENDING
    assert request.status.approvals == ()
    refused = rig.records("decision_attempted", uid)
    assert sorted(r["details"]["annotation"] for r in refused) == sorted(
        [record_key("bob"), record_key("mallory")]
    )
    assert {(r["outcome"], r["reason"]) for r in refused} == {("refused", "untrusted_record")}
