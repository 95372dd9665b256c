"""The ApprovalRequest state machine: pure functions from a request (and the time) to its next
status, and the audit records that justify it.

The operator is level-triggered: whatever woke it (creation, a decision record, the expiry
timer, a restart), it calls `reconcile` on the request as it is now and writes the status it
returns. Running it twice on the same input gives the same output, so a crash at any point and a
restart never double a transition; terminal phases are returned unchanged. The other functions
are the rest of what the status says — announced, resolved, notification failed, audit held
back — so that every field of `status` is decided here and nowhere else.

Decisions arrive as *decision records* (core/stamps.py): annotations that only Greenlight issues,
after the caller was authenticated and authorized, one per user, so concurrent approvals from
different users are separate keys and are never lost. A record Greenlight did not issue, or a
request whose creator stamp it did not issue, is never decided on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from greenlight.core.model import Action, Decision, Phase, Via
from greenlight.core.policies import Outcome
from greenlight.core.policy import Attempt, judge, quorum_met
from greenlight.core.request import (
    Approval,
    ConditionStatus,
    ConditionType,
    Execution,
    Notification,
    NotificationState,
    Request,
    Status,
)
from greenlight.core.stamps import DecisionRecord

OPERATOR_IDENTITY = "greenlight"  # `decision.by` for expiry
UNVERIFIED = "unverified_request"
UNTRUSTED = "untrusted_record"
_TERMINAL_EVENTS = {Phase.EXPIRED: "expired", Phase.CANCELLED: "cancelled"}


@dataclass(frozen=True)
class AuditEntry:
    """One audit event the operator writes (idempotently, by `event_id`) before the status."""

    event: str
    actor: str
    outcome: str
    event_id: str
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    status: Status
    audit: tuple[AuditEntry, ...]
    entered: Phase | None  # the phase this transition moved into, if it moved

    def changes(self, before: Status) -> bool:
        return self.status != before


def reconcile(request: Request, now: datetime) -> Transition:
    """The next status of `request` at time `now`, and the audit events that justify it."""
    status, audit, entered = request.status, [], None
    if status.phase is None:
        status = _initial_status(request, now)
        entered = Phase.PENDING
        audit.append(_requested_entry(request, status))
        if _auto_approved(request):
            status = _finish(status, _policy_decision(request), now)
            entered = Phase.APPROVED
            audit.append(_terminal_entry(request.uid, status))
    audit.extend(_untrusted_entries(request))
    for record in request.marks.records:
        status, entry, moved = _apply(request, status, record, now)
        if entry is not None:
            audit.append(entry)
        if moved is not None:
            entered = moved
            audit.append(_terminal_entry(request.uid, status))
    if status.phase is Phase.PENDING and status.expires_at and now >= status.expires_at:
        status = _finish(
            status,
            Decision(
                Phase.EXPIRED,
                OPERATOR_IDENTITY,
                status.expires_at,
                Via.EXPIRY,
                "no decision before the timeout",
            ),
            now,
        )
        entered = Phase.EXPIRED
        audit.append(_terminal_entry(request.uid, status))
    status = _executed(request, status, audit)
    audited = status.condition(ConditionType.AUDITED)
    if audited is not None and audited.status is ConditionStatus.FALSE:
        status = status.with_condition(
            ConditionType.AUDITED,
            ConditionStatus.TRUE,
            "AuditWritten",
            "audit records are being written again",
            now,
        )
    return Transition(status=status, audit=tuple(audit), entered=entered)


def announced(
    status: Status, channel: str, ref: str, notifier: str, now: datetime, *, to: str = ""
) -> Status:
    """The request was announced by `notifier` on `channel` (message `ref`), asked to go to
    `to` (when the chat service names the channel otherwise)."""
    entry = Notification(
        channel, ref, NotificationState.SENT, now, via=notifier, to=to if to != channel else ""
    )
    status = replace(status, notifications=(*status.notifications, entry))
    if status.phase is Phase.PENDING:
        status = status.with_condition(
            ConditionType.NOTIFIED, ConditionStatus.TRUE, "Sent", f"notified via {notifier}", now
        )
    return status


def resolved(status: Status, done: Iterable[Notification], now: datetime) -> Status:
    """These announcements now show the outcome."""
    finished = set(done)
    return replace(
        status,
        notifications=tuple(
            replace(n, state=NotificationState.RESOLVED, at=now) if n in finished else n
            for n in status.notifications
        ),
    )


def to_announce(status: Status, targets: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Which of `targets` ((notifier, channel) pairs) a pending request is still to be
    announced on (one Greenlight could not verify is never announced: its buttons could never
    decide it)."""
    if status.phase is not Phase.PENDING or not verified(status):
        return ()
    return tuple(
        (via, to)
        for via, to in dict.fromkeys(targets)
        if not any(n.covers(via, to) for n in status.notifications)
    )


def verified(status: Status) -> bool:
    condition = status.condition(ConditionType.VERIFIED)
    return condition is None or condition.status is not ConditionStatus.FALSE


def to_resolve(status: Status) -> tuple[Notification, ...]:
    """Announcements of a terminal request that do not show its outcome yet."""
    if status.phase is None or not status.phase.terminal:
        return ()
    return tuple(n for n in status.notifications if n.state is NotificationState.SENT)


def notify_failed(status: Status, notifier: str, error: str, now: datetime) -> Status:
    return status.with_condition(
        ConditionType.NOTIFIED,
        ConditionStatus.FALSE,
        "NotifierUnavailable",
        f"{notifier}: {error}",
        now,
    )


def audit_held_back(status: Status, error: str, now: datetime) -> Status:
    """The audit log refused a record: the transition waits; say so on the object."""
    return status.with_condition(
        ConditionType.AUDITED, ConditionStatus.FALSE, "AuditWriteFailed", error, now
    )


def _initial_status(request: Request, now: datetime) -> Status:
    status = Status(
        phase=Phase.PENDING,
        requested_by=request.marks.stamp.user if request.marks.stamp else "",
        expires_at=request.created + request.timeout,
        plan_digest=request.spec.plan_digest,
        policy=request.policy,
        plan=request.marks.plan,
    )
    status = status.with_condition(
        ConditionType.NOTIFIED, ConditionStatus.UNKNOWN, "Pending", "no notification sent yet", now
    ).with_condition(
        ConditionType.DECIDED, ConditionStatus.FALSE, "Pending", "waiting for a decision", now
    )
    if request.marks.stamp is None:
        status = status.with_condition(
            ConditionType.VERIFIED,
            ConditionStatus.FALSE,
            "UnverifiedRequester",
            "this request carries no requested-by stamp issued by Greenlight (it was written "
            "while no admission webhook covered it), so no decision will be taken on it; "
            "re-create it (greenlight resubmit NAME) so that the webhook stamps its creator",
            now,
        )
    return status


def _apply(
    request: Request, status: Status, record: DecisionRecord, now: datetime
) -> tuple[Status, AuditEntry | None, Phase | None]:
    """Apply one valid record: the new status, its audit entry, and the phase entered."""
    phase = status.phase or Phase.PENDING
    if _decided_by(status, record):
        return status, None, None
    if record.action is Action.APPROVE and any(a.user == record.user for a in status.approvals):
        return status, _allowed(request, record, counted=False), None
    if request.marks.stamp is None:
        code, message = UNVERIFIED, "the request was not stamped by Greenlight; nothing decides it"
    else:
        attempt = Attempt(record.identity, record.action, record.reason)
        # RBAC was checked when the record was issued; policy is checked again here so that a
        # record can never take effect against the request's own rules (defence in depth).
        verdict = judge(request.view(status), attempt, rbac_allowed=True, now=record.at)
        code, message = verdict.code, verdict.message
        if verdict.code == "duplicate":  # the same person under another spelling
            return status, _allowed(request, record, counted=False), None
        if not phase.terminal and verdict.allowed:
            return _count(request, status, record, now)
    entry = AuditEntry(
        "decision_attempted",
        actor=record.user,
        outcome="refused",
        reason=code,
        event_id=f"{request.uid}:late:{record.key}",
        details={"action": record.action.value, "via": record.via.value, "message": message},
    )
    return status, entry, None


def _count(
    request: Request, status: Status, record: DecisionRecord, now: datetime
) -> tuple[Status, AuditEntry, Phase | None]:
    allowed = _allowed(request, record, counted=True)
    decision = Decision(Phase.PENDING, record.user, record.at, record.via, record.reason)
    if record.action is Action.APPROVE:
        approval = Approval(record.user, record.at, record.via, record.reason)
        status = replace(status, approvals=(*status.approvals, approval))
        if not _quorum(request, status):
            return status, allowed, None
        decision = replace(decision, outcome=Phase.APPROVED)
    elif record.action is Action.DENY:
        decision = replace(decision, outcome=Phase.DENIED)
    else:
        decision = replace(decision, outcome=Phase.CANCELLED)
    return _finish(status, decision, now), allowed, decision.outcome


def _quorum(request: Request, status: Status) -> bool:
    """Enough distinct approvals: the effective count, and at least N from each group the
    policy names (group membership as the API server reported it when each person decided)."""
    policy = request.policy
    if policy is None:
        return len(status.approvals) >= request.spec.required_approvals
    groups = {r.user: r.groups for r in request.marks.records if r.action is Action.APPROVE}
    return quorum_met(policy, [(a.user, groups.get(a.user, ())) for a in status.approvals])


def _auto_approved(request: Request) -> bool:
    """Every matching policy allow-lists this action: decided at once, by the policy."""
    policy = request.policy
    return (
        policy is not None
        and policy.outcome is Outcome.AUTO_APPROVE
        and request.marks.stamp is not None
    )


def _policy_decision(request: Request) -> Decision:
    policy = request.policy
    assert policy is not None
    by = "policy:" + ",".join(policy.sources) if policy.sources else "policy"
    return Decision(Phase.APPROVED, by, request.created, Via.POLICY, "auto-approved by policy")


def _allowed(request: Request, record: DecisionRecord, *, counted: bool) -> AuditEntry:
    """The allowed attempt, audited once the operator sees its record on the object; an
    approval by someone already counted is on record too, counted once."""
    return AuditEntry(
        "decision_attempted",
        actor=record.user,
        outcome="allowed",
        event_id=f"{request.uid}:allowed:{record.key}",
        details={
            "action": record.action.value,
            "via": record.via.value,
            "groups": list(record.groups),
            "reason": record.reason,
            "counted": counted,
        },
    )


def _finish(status: Status, decision: Decision, now: datetime) -> Status:
    outcome = decision.outcome.value
    message = f"{outcome} by {decision.by} via {decision.via.value}" + (
        f": {decision.reason}" if decision.reason else ""
    )
    return replace(status, phase=decision.outcome, decision=decision).with_condition(
        ConditionType.DECIDED, ConditionStatus.TRUE, outcome, message, now
    )


def _executed(request: Request, status: Status, audit: list[AuditEntry]) -> Status:
    """`status.execution` from a valid execution record of this approval's receipt, and its
    `claimed` and `finished` audit records. A finished execution never changes again."""
    record = request.marks.execution
    receipt = status.receipt
    if record is None or status.phase is not Phase.APPROVED or receipt is None:
        return status
    if record.receipt != receipt.digest or (status.execution and status.execution.finished_at):
        return status
    execution = Execution.of(record)
    since_approval = (
        (record.claimed_at - status.decision.at).total_seconds() if status.decision else None
    )
    audit.append(
        AuditEntry(
            "claimed",
            actor=record.user,
            outcome="claimed",
            event_id=f"{request.uid}:claimed",
            details={
                "receiptDigest": record.receipt,
                "startedAt": execution.to_json()["startedAt"],
                "secondsAfterApproval": since_approval,
            },
        )
    )
    if execution.finished_at is not None:
        audit.append(
            AuditEntry(
                "finished",
                actor=record.user,
                outcome=execution_result(execution),
                event_id=f"{request.uid}:finished",
                details={
                    key: value
                    for key, value in execution.to_json().items()
                    if key in ("exitCode", "startedAt", "finishedAt", "durationSeconds")
                },
            )
        )
    return replace(status, execution=execution)


def execution_result(execution: Execution) -> str:
    """success (exit 0), failure (any other code) or unknown (reported without a code)."""
    if execution.exit_code == 0:
        return "success"
    return "failure" if isinstance(execution.exit_code, int) else "unknown"


def _requested_entry(request: Request, status: Status) -> AuditEntry:
    return AuditEntry(
        "requested",
        actor=status.requested_by or "unknown",
        outcome="accepted" if request.marks.stamp else "unverified",
        event_id=f"{request.uid}:requested",
        details=_requested_details(request, status),
    )


def _requested_details(request: Request, status: Status) -> dict[str, Any]:
    """The requested record: when it expires, the plan, and what admission decided (the
    effective policy, conditions that failed and were read strictly, Greenlight's plan
    reading)."""
    details: dict[str, Any] = {
        "expiresAt": status.to_json()["expiresAt"],
        "planDigest": status.plan_digest,
    }
    stamp = request.marks.stamp
    if stamp is not None and stamp.policy is not None:
        details["policy"] = dict(stamp.policy)
    if stamp is not None and stamp.plan is not None:
        details["plan"] = dict(stamp.plan)
    return details


def _untrusted_entries(request: Request) -> list[AuditEntry]:
    return [
        AuditEntry(
            "decision_attempted",
            actor="unknown",
            outcome="refused",
            reason=UNTRUSTED,
            event_id=f"{request.uid}:untrusted:{key}",
            details={
                "annotation": key,
                "message": "a record Greenlight did not issue; ignored",
            },
        )
        for key in request.marks.untrusted
    ]


def _terminal_entry(uid: str, status: Status) -> AuditEntry:
    decision = status.decision
    assert decision is not None
    return AuditEntry(
        _TERMINAL_EVENTS.get(decision.outcome, "decided"),
        actor=decision.by,
        outcome=decision.outcome.value,
        reason=decision.reason,
        event_id=f"{uid}:terminal",
        details={"via": decision.via.value, "approvals": [a.user for a in status.approvals]},
    )


def _decided_by(status: Status, record: DecisionRecord) -> bool:
    """Whether `record` is the one that produced the (terminal) decision."""
    decision = status.decision
    return (
        decision is not None
        and decision.by == record.user
        and decision.at.replace(microsecond=0) == record.at.replace(microsecond=0)
    )
