"""The ApprovalRequest state machine: one pure function from (object, now) to the next status.

The operator is level-triggered: whatever woke it (creation, a decision annotation, the expiry
timer, a restart), it calls `reconcile` on the object as it is now and writes the status it
returns. Running it twice on the same input gives the same output, so a crash at any point and a
restart never double a transition; terminal phases are returned unchanged.

Decisions arrive as *decision records*: operator-owned annotations (`decisions.greenlight.dev/<id>`)
that the admission webhook writes after it authenticated and authorized the caller, one per user,
so concurrent approvals from different users are separate keys and are never lost.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from greenlight.core.durations import DEFAULT_TIMEOUT, parse_timeout
from greenlight.core.model import (
    ANN_REQUESTED_BY,
    DECISION_RECORD_PREFIX,
    Action,
    Decision,
    Identity,
    Phase,
    RequestView,
    Via,
)
from greenlight.core.policy import Attempt, judge
from greenlight.core.timefmt import format_precise, format_time, parse_time

OPERATOR_IDENTITY = "greenlight"  # `decision.by` for expiry

Obj = Mapping[str, Any]


def plan_digest(details: str) -> str:
    return "sha256:" + hashlib.sha256(details.encode("utf-8")).hexdigest()


def record_key(user: str) -> str:
    """The annotation key holding `user`'s decision (user names may hold characters keys can't)."""
    return DECISION_RECORD_PREFIX + hashlib.sha256(user.encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class DecisionRecord:
    """An authenticated, authorized decision attempt, as stored on the object."""

    user: str
    action: Action
    at: datetime
    via: Via
    reason: str = ""
    groups: tuple[str, ...] = ()

    def to_annotation(self) -> str:
        return json.dumps(
            {
                "user": self.user,
                "groups": list(self.groups),
                "action": self.action.value,
                "reason": self.reason,
                "at": format_precise(self.at),
                "via": self.via.value,
            },
            sort_keys=True,
        )

    @classmethod
    def from_annotation(cls, text: str) -> DecisionRecord:
        try:
            data = json.loads(text)
            return cls(
                user=str(data["user"]),
                groups=tuple(str(g) for g in data.get("groups", ())),
                action=Action(data["action"]),
                reason=str(data.get("reason", "")),
                at=parse_time(str(data["at"])),
                via=Via(data["via"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed decision record: {exc}") from exc

    @property
    def identity(self) -> Identity:
        return Identity(user=self.user, groups=self.groups)

    @property
    def key(self) -> str:
        return f"{self.user}@{format_precise(self.at)}"


@dataclass(frozen=True)
class AuditEntry:
    """One audit event the handler must write (idempotently, by `event_id`) before the status."""

    event: str
    actor: str
    outcome: str
    event_id: str
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    status: dict[str, Any]
    audit: tuple[AuditEntry, ...]
    entered: Phase | None  # the phase this transition moved into, if it moved

    def changes(self, obj: Obj) -> bool:
        return self.status != dict(obj.get("status") or {})


def decision_records(obj: Obj) -> list[DecisionRecord]:
    """Every well-formed decision record on the object, oldest first (malformed ones are dropped:
    only the webhook and the operator can write these keys)."""
    annotations: Mapping[str, str] = (obj.get("metadata") or {}).get("annotations") or {}
    records = []
    for key, value in annotations.items():
        if key.startswith(DECISION_RECORD_PREFIX):
            try:
                records.append(DecisionRecord.from_annotation(value))
            except ValueError:
                continue
    return sorted(records, key=lambda r: (r.at, r.user))


def requested_by(obj: Obj) -> str:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(ANN_REQUESTED_BY, "")
    try:
        return str(json.loads(raw)["user"]) if raw else ""
    except (ValueError, KeyError, TypeError):
        return ""


def view(obj: Obj) -> RequestView:
    """A read-only view of the object for policy checks and notifiers."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    requester = spec.get("requester") or {}
    plan = spec.get("plan") or {}
    policy = spec.get("policy") or {}
    approvers = policy.get("approvers") or {}
    decision = status.get("decision")
    expires = status.get("expiresAt")
    return RequestView(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        action=str(spec.get("action", "")),
        target=str(spec.get("target", "")),
        workflow_id=str(requester.get("workflowId", "")),
        task_id=str(requester.get("taskId", "")),
        on_behalf_of=str(requester.get("onBehalfOf", "")),
        plan_summary=str(plan.get("summary", "")),
        plan_details=str(plan.get("details", "")),
        plan_digest=str(status.get("planDigest") or plan_digest(str(plan.get("details", "")))),
        requested_by=str(status.get("requestedBy") or requested_by(obj)),
        expires_at=parse_time(expires) if expires else _expiry(obj),
        phase=Phase(status.get("phase", Phase.PENDING.value)),
        required_approvals=int(policy.get("requiredApprovals", 1)),
        approvers_users=tuple(approvers.get("users") or ()),
        approvers_groups=tuple(approvers.get("groups") or ()),
        slack_channel=str(((spec.get("notify") or {}).get("slack") or {}).get("channel", "")),
        approvals=tuple(str(a.get("user", "")) for a in status.get("approvals") or ()),
        decision=_decision(decision) if decision else None,
    )


def reconcile(obj: Obj, now: datetime) -> Transition:
    """The next status of `obj` at time `now`, and the audit events that justify it."""
    status: dict[str, Any] = json.loads(json.dumps(obj.get("status") or {}))
    uid = str((obj.get("metadata") or {}).get("uid", ""))
    audit: list[AuditEntry] = []
    entered: Phase | None = None

    if not status.get("phase"):
        status.update(_initial_status(obj, now))
        entered = Phase.PENDING
        audit.append(
            AuditEntry(
                "requested",
                actor=status["requestedBy"] or "unknown",
                outcome="accepted",
                event_id=f"{uid}:requested",
                details={"expiresAt": status["expiresAt"], "planDigest": status["planDigest"]},
            )
        )

    phase = Phase(status["phase"])
    for record in decision_records(obj):
        current = view({**obj, "status": status})
        counted = record.action is Action.APPROVE and record.user in current.approvals
        if counted:
            continue
        attempt = Attempt(record.identity, record.action, record.reason)
        # RBAC was checked when the record was admitted; policy is checked again here so that a
        # record can never take effect against the request's own rules (defence in depth).
        verdict = judge(current, attempt, rbac_allowed=True, now=record.at)
        if phase.terminal or not verdict.allowed:
            if _decided_by(status, record):
                continue
            audit.append(
                AuditEntry(
                    "decision_attempted",
                    actor=record.user,
                    outcome="refused",
                    reason=verdict.code,
                    event_id=f"{uid}:late:{record.key}",
                    details={
                        "action": record.action.value,
                        "via": record.via.value,
                        "message": verdict.message,
                    },
                )
            )
            continue
        if record.action is Action.APPROVE:
            status.setdefault("approvals", []).append(
                {
                    "user": record.user,
                    "at": format_time(record.at),
                    "via": record.via.value,
                    "reason": record.reason,
                }
            )
            if len(status["approvals"]) >= int(_policy(obj).get("requiredApprovals", 1)):
                phase = _finish(
                    status, Phase.APPROVED, record.user, record.at, record.via, record.reason, now
                )
        elif record.action is Action.DENY:
            phase = _finish(
                status, Phase.DENIED, record.user, record.at, record.via, record.reason, now
            )
        else:
            phase = _finish(
                status, Phase.CANCELLED, record.user, record.at, record.via, record.reason, now
            )
        if phase.terminal:
            entered = phase
            audit.append(_terminal_entry(uid, status))

    if phase is Phase.PENDING and now >= parse_time(status["expiresAt"]):
        expires_at = parse_time(status["expiresAt"])
        phase = _finish(
            status,
            Phase.EXPIRED,
            OPERATOR_IDENTITY,
            expires_at,
            Via.EXPIRY,
            "no decision before the timeout",
            now,
        )
        entered = phase
        audit.append(_terminal_entry(uid, status))

    return Transition(status=status, audit=tuple(audit), entered=entered)


def set_condition(
    status: dict[str, Any], kind: str, state: str, reason: str, message: str, now: datetime
) -> None:
    """Set one condition, keeping lastTransitionTime when the status did not flip."""
    conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
    for condition in conditions:
        if condition.get("type") == kind:
            if condition.get("status") != state:
                condition["lastTransitionTime"] = format_time(now)
            condition.update(status=state, reason=reason, message=message)
            return
    conditions.append(
        {
            "type": kind,
            "status": state,
            "reason": reason,
            "message": message,
            "lastTransitionTime": format_time(now),
        }
    )


def _initial_status(obj: Obj, now: datetime) -> dict[str, Any]:
    plan = (obj.get("spec") or {}).get("plan") or {}
    status: dict[str, Any] = {
        "phase": Phase.PENDING.value,
        "requestedBy": requested_by(obj),
        "expiresAt": format_time(_expiry(obj)),
        "planDigest": plan_digest(str(plan.get("details", ""))),
        "approvals": [],
        "notifications": [],
    }
    set_condition(status, "Notified", "Unknown", "Pending", "no notification sent yet", now)
    set_condition(status, "Decided", "False", "Pending", "waiting for a decision", now)
    return status


def _expiry(obj: Obj) -> datetime:
    meta = obj.get("metadata") or {}
    created = parse_time(str(meta["creationTimestamp"]))
    timeout = parse_timeout(str((obj.get("spec") or {}).get("timeout") or DEFAULT_TIMEOUT))
    return created + timeout


def _policy(obj: Obj) -> Mapping[str, Any]:
    return (obj.get("spec") or {}).get("policy") or {}


def _finish(
    status: dict[str, Any],
    outcome: Phase,
    by: str,
    at: datetime,
    via: Via,
    reason: str,
    now: datetime,
) -> Phase:
    status["phase"] = outcome.value
    status["decision"] = {
        "outcome": outcome.value,
        "by": by,
        "at": format_time(at),
        "via": via.value,
        "reason": reason,
    }
    message = f"{outcome.value} by {by} via {via.value}" + (f": {reason}" if reason else "")
    set_condition(status, "Decided", "True", outcome.value, message, now)
    return outcome


def _terminal_entry(uid: str, status: Mapping[str, Any]) -> AuditEntry:
    decision = status["decision"]
    event = {"Expired": "expired", "Cancelled": "cancelled"}.get(decision["outcome"], "decided")
    return AuditEntry(
        event,
        actor=decision["by"],
        outcome=decision["outcome"],
        reason=decision.get("reason", ""),
        event_id=f"{uid}:terminal",
        details={
            "via": decision["via"],
            "approvals": [a["user"] for a in status.get("approvals", [])],
        },
    )


def _decided_by(status: Mapping[str, Any], record: DecisionRecord) -> bool:
    """Whether `record` is the one that produced the (terminal) decision."""
    decision = status.get("decision") or {}
    return (
        bool(decision)
        and decision.get("by") == record.user
        and decision.get("at") == format_time(record.at)
    )


def _decision(data: Mapping[str, Any]) -> Decision:
    return Decision(
        outcome=Phase(data["outcome"]),
        by=str(data.get("by", "")),
        at=parse_time(str(data["at"])),
        via=Via(data.get("via", Via.KUBECTL.value)),
        reason=str(data.get("reason", "")),
    )
