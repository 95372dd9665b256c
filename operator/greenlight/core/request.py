"""One ApprovalRequest as typed, frozen data: parsed once at the edge, written back once.

`Request.parse` reads an object as the API server returns it; the core decides on a `Request`
and returns a new `Status`; `Status.to_json` is what the operator writes. Nothing after the edge
indexes a status by string, and nothing keeps the plan: the request carries its digest and a
bounded preview for people, never the whole plan text.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from greenlight.core.dsse import Envelope
from greenlight.core.durations import (
    DEFAULT_TIMEOUT,
    DEFAULT_VALID_FOR,
    parse_timeout,
    parse_valid_for,
)
from greenlight.core.followups import Progress
from greenlight.core.model import (
    ANN_EXECUTION,
    ANN_REQUESTED_BY,
    ANN_TRACEPARENT,
    DECISION_RECORD_PREFIX,
    Decision,
    Phase,
    RequestView,
    Via,
)
from greenlight.core.plans import TEXT, PlanReading
from greenlight.core.policies import EffectivePolicy
from greenlight.core.stamps import (
    DecisionRecord,
    ExecutionRecord,
    Stamp,
    Subject,
    plan_digest,
)
from greenlight.core.timefmt import format_time, parse_time

EMPTY_DIGEST = plan_digest("")
DEFAULT_DURATION = parse_timeout(DEFAULT_TIMEOUT)
DEFAULT_VALIDITY = parse_valid_for(DEFAULT_VALID_FOR)
PREVIEW_LINES = 20
PREVIEW_CHARS = 4096


class ConditionType(enum.StrEnum):
    NOTIFIED = "Notified"
    DECIDED = "Decided"
    AUDITED = "Audited"
    VERIFIED = "Verified"


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class NotificationState(enum.StrEnum):
    SENT = "sent"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str
    since: datetime  # lastTransitionTime

    def to_json(self) -> dict[str, str]:
        return {
            "type": self.type.value,
            "status": self.status.value,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": format_time(self.since),
        }


@dataclass(frozen=True)
class Approval:
    user: str
    at: datetime
    via: Via
    reason: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "user": self.user,
            "at": format_time(self.at),
            "via": self.via.value,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Notification:
    """One announcement: `channel` and `ref` say where the message is (as the chat service
    names it), `via` which notifier sent it and `to` the channel it was asked to go to."""

    channel: str
    ref: str
    state: NotificationState
    at: datetime
    via: str = ""  # "" on entries written before notifiers were named: any notifier's
    to: str = ""  # "" when it is `channel`

    def covers(self, via: str, to: str) -> bool:
        """Whether this entry is the announcement `via` owes to channel `to`."""
        return (self.via or via) == via and (self.to or self.channel) == to

    def to_json(self) -> dict[str, str]:
        data = {
            "channel": self.channel,
            "ref": self.ref,
            "state": self.state.value,
            "at": format_time(self.at),
        }
        if self.via:
            data["via"] = self.via
        if self.to and self.to != self.channel:
            data["to"] = self.to
        return data


@dataclass(frozen=True)
class Execution:
    """`status.execution`: the approved action claimed once and, when reported, finished. A
    sub-status of Approved (the phase stays Approved). A claim without a finish is a runner
    that is still going, or one that died: visible here, alerted on, never retried."""

    claimed_by: str
    started_at: datetime  # when the claim was admitted
    receipt: str  # digest of the receipt that was claimed
    finished_at: datetime | None = None
    exit_code: int | str | None = None  # an integer, or "unknown"

    @classmethod
    def of(cls, record: ExecutionRecord) -> Execution:
        return cls(
            record.user, record.claimed_at, record.receipt, record.finished_at, record.exit_code
        )

    @property
    def duration(self) -> timedelta | None:
        return self.finished_at - self.started_at if self.finished_at else None

    def to_json(self) -> dict[str, Any]:
        started = format_time(self.started_at)
        data: dict[str, Any] = {
            "claimedBy": self.claimed_by,
            # The command starts as soon as its claim is admitted: both are the webhook's time
            # of the claim (the runner's own clock is not trusted).
            "claimedAt": started,
            "startedAt": started,
            "receiptDigest": self.receipt,
        }
        if self.finished_at is not None:
            data["finishedAt"] = format_time(self.finished_at)
            data["exitCode"] = self.exit_code
            data["durationSeconds"] = round((self.finished_at - self.started_at).total_seconds(), 3)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Execution:
        finished = data.get("finishedAt")
        return cls(
            claimed_by=str(data["claimedBy"]),
            started_at=parse_time(str(data["startedAt"])),
            receipt=str(data.get("receiptDigest") or ""),
            finished_at=parse_time(str(finished)) if finished else None,
            exit_code=data.get("exitCode"),
        )


@dataclass(frozen=True)
class Status:
    """`status` of an ApprovalRequest. An empty phase means "not handled yet"."""

    phase: Phase | None = None
    requested_by: str = ""
    expires_at: datetime | None = None
    plan_digest: str = ""
    approvals: tuple[Approval, ...] = ()
    decision: Decision | None = None
    notifications: tuple[Notification, ...] = ()
    conditions: tuple[Condition, ...] = ()
    receipt: Envelope | None = None  # the signed receipt (core/receipts.py), once Approved
    execution: Execution | None = None  # the receipt claimed, and the run reported
    # Reminders and escalation steps sent (core/followups.py).
    follow_ups: Progress = field(default_factory=Progress)
    # Copies of what admission stamped (the stamp stays the source): shown to people.
    policy: EffectivePolicy | None = None  # status.policy
    plan: PlanReading | None = None  # status.plan: Greenlight's reading of the plan

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type is kind), None)

    def with_condition(
        self, kind: ConditionType, state: ConditionStatus, reason: str, message: str, now: datetime
    ) -> Status:
        """Set one condition, keeping lastTransitionTime when its status did not flip."""
        old = self.condition(kind)
        since = old.since if old is not None and old.status is state else now
        new = Condition(kind, state, reason, message, since)
        if old is None:
            return replace(self, conditions=(*self.conditions, new))
        return replace(self, conditions=tuple(new if c is old else c for c in self.conditions))

    def to_json(self) -> dict[str, Any]:
        if self.phase is None:
            return {}
        data: dict[str, Any] = {
            "phase": self.phase.value,
            "requestedBy": self.requested_by,
            "expiresAt": format_time(self.expires_at) if self.expires_at else "",
            "planDigest": self.plan_digest,
            "approvals": [a.to_json() for a in self.approvals],
            "notifications": [n.to_json() for n in self.notifications],
            "conditions": [c.to_json() for c in self.conditions],
        }
        if self.decision is not None:
            d = self.decision
            data["decision"] = {
                "outcome": d.outcome.value,
                "by": d.by,
                "at": format_time(d.at),
                "via": d.via.value,
                "reason": d.reason,
            }
        if self.receipt is not None:
            data["receipt"] = self.receipt.to_json()
        if self.execution is not None:
            data["execution"] = self.execution.to_json()
        if self.follow_ups != Progress():
            data["followUps"] = self.follow_ups.to_json()
        if self.policy is not None:
            data["policy"] = self.policy.to_json()
        if self.plan is not None:
            data["plan"] = self.plan.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Status:
        """Parse a status written by Greenlight (only the operator may write status)."""
        if not data.get("phase"):
            return cls()
        decision = data.get("decision")
        receipt = data.get("receipt")
        return cls(
            phase=Phase(data["phase"]),
            requested_by=str(data.get("requestedBy") or ""),
            expires_at=parse_time(data["expiresAt"]) if data.get("expiresAt") else None,
            plan_digest=str(data.get("planDigest") or ""),
            approvals=tuple(
                Approval(
                    str(a["user"]), parse_time(a["at"]), Via(a["via"]), str(a.get("reason") or "")
                )
                for a in data.get("approvals") or ()
            ),
            decision=Decision(
                outcome=Phase(decision["outcome"]),
                by=str(decision.get("by", "")),
                at=parse_time(decision["at"]),
                via=Via(decision.get("via", Via.KUBECTL.value)),
                reason=str(decision.get("reason") or ""),
            )
            if decision
            else None,
            notifications=tuple(
                Notification(
                    str(n["channel"]),
                    str(n.get("ref") or ""),
                    NotificationState(n.get("state", "sent")),
                    parse_time(n["at"]),
                    via=str(n.get("via") or ""),
                    to=str(n.get("to") or ""),
                )
                for n in data.get("notifications") or ()
            ),
            conditions=tuple(
                Condition(
                    ConditionType(c["type"]),
                    ConditionStatus(c["status"]),
                    str(c.get("reason") or ""),
                    str(c.get("message") or ""),
                    parse_time(c["lastTransitionTime"]),
                )
                for c in data.get("conditions") or ()
                if c.get("type") in ConditionType._value2member_map_
            ),
            receipt=Envelope.from_json(receipt) if receipt else None,
            execution=Execution.from_json(data["execution"]) if data.get("execution") else None,
            follow_ups=Progress.from_json(data.get("followUps")),
            policy=EffectivePolicy.from_json(data["policy"]) if data.get("policy") else None,
            plan=PlanReading.from_json(data["plan"]) if data.get("plan") else None,
        )


@dataclass(frozen=True)
class Spec:
    """What the requester asked for (immutable after creation). The plan is kept as its digest
    and a bounded preview."""

    action: str
    target: str
    workflow_id: str
    task_id: str = ""
    on_behalf_of: str = ""
    plan_format: str = TEXT  # spec.plan.format: how Greenlight reads the plan (core/plans.py)
    plan_summary: str = ""
    plan_preview: str = ""
    plan_digest: str = EMPTY_DIGEST
    timeout: timedelta = DEFAULT_DURATION
    valid_for: timedelta = DEFAULT_VALIDITY
    required_approvals: int = 1
    approvers_users: tuple[str, ...] = ()
    approvers_groups: tuple[str, ...] = ()
    slack_channel: str = ""
    teams_conversation: str = ""

    @classmethod
    def from_json(cls, spec: Mapping[str, Any]) -> Spec:
        requester = spec.get("requester") or {}
        plan = spec.get("plan") or {}
        policy = spec.get("policy") or {}
        approvers = policy.get("approvers") or {}
        details = str(plan.get("details") or "")
        return cls(
            action=str(spec.get("action", "")),
            target=str(spec.get("target", "")),
            workflow_id=str(requester.get("workflowId", "")),
            task_id=str(requester.get("taskId", "")),
            on_behalf_of=str(requester.get("onBehalfOf", "")),
            plan_format=str(plan.get("format") or TEXT),
            plan_summary=str(plan.get("summary") or ""),
            plan_preview=preview(details),
            plan_digest=plan_digest(details),
            timeout=parse_timeout(str(spec.get("timeout") or DEFAULT_TIMEOUT)),
            valid_for=parse_valid_for(str(spec.get("validFor") or DEFAULT_VALID_FOR)),
            required_approvals=int(policy.get("requiredApprovals", 1)),
            approvers_users=tuple(str(u) for u in approvers.get("users") or ()),
            approvers_groups=tuple(str(g) for g in approvers.get("groups") or ()),
            slack_channel=str(((spec.get("notify") or {}).get("slack") or {}).get("channel", "")),
            teams_conversation=str(
                ((spec.get("notify") or {}).get("teams") or {}).get("conversation", "")
            ),
        )


def preview(details: str) -> str:
    """The first lines of a plan, bounded in lines and characters ("…" marks a cut)."""
    head = details[: PREVIEW_CHARS + 1]
    lines = head.splitlines()
    cut = len(lines) > PREVIEW_LINES or len(details) > PREVIEW_CHARS
    text = "\n".join(lines[:PREVIEW_LINES])[:PREVIEW_CHARS]
    return text + "\n…" if cut else text


@dataclass(frozen=True)
class Marks:
    """Greenlight's annotations on the object, each checked against the operator's key."""

    stamp: Stamp | None  # None: absent, malformed or not issued by Greenlight
    records: tuple[DecisionRecord, ...]  # valid records, oldest first
    untrusted: tuple[str, ...]  # annotation keys holding records Greenlight did not issue
    # What admission decided, from the stamp: None on requests stamped before policies.
    policy: EffectivePolicy | None = None
    plan: PlanReading | None = None
    execution: ExecutionRecord | None = None  # a valid execution record (None: none, or forged)


@dataclass(frozen=True)
class Request:
    namespace: str
    name: str
    uid: str
    resource_version: str
    created: datetime
    spec: Spec
    status: Status
    marks: Marks
    traceparent: str = ""

    @property
    def policy(self) -> EffectivePolicy | None:
        """The effective policy stamped at admission (None: the request's own rules only)."""
        return self.marks.policy

    @property
    def timeout(self) -> timedelta:
        return self.policy.timeout if self.policy is not None else self.spec.timeout

    @property
    def expires_at(self) -> datetime:
        return self.status.expires_at or self.created + self.timeout

    def notify_also(self, status: Status) -> tuple[tuple[str, str], ...]:
        """(notifier, channel) pairs the policy adds: its channels, and those of every
        escalation step already reached."""
        if self.policy is None:
            return ()
        reached = self.policy.escalation[: status.follow_ups.escalations]
        pairs: list[tuple[str, str]] = []
        for notify in (self.policy.notify, *(step.notify for step in reached)):
            pairs += [("slack", c) for c in notify.slack] + [("teams", c) for c in notify.teams]
        return tuple(dict.fromkeys(pairs))

    @property
    def requested_by(self) -> str:
        return self.status.requested_by or (self.marks.stamp.user if self.marks.stamp else "")

    def subject(self) -> dict[str, Any]:
        """What an audit record says it is about: one shape on every path (DESIGN §4)."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "planDigest": self.status.plan_digest or self.spec.plan_digest,
            "phase": self.status.phase.value if self.status.phase else None,
            "requestedBy": self.requested_by or None,
        }

    def view(self, status: Status | None = None) -> RequestView:
        """What policy checks and notifiers read, for this request with `status`."""
        status = status or self.status
        spec = self.spec
        return RequestView(
            namespace=self.namespace,
            name=self.name,
            uid=self.uid,
            action=spec.action,
            target=spec.target,
            workflow_id=spec.workflow_id,
            task_id=spec.task_id,
            on_behalf_of=spec.on_behalf_of,
            plan_summary=spec.plan_summary,
            plan_preview=spec.plan_preview,
            plan_digest=status.plan_digest or spec.plan_digest,
            requested_by=status.requested_by or self.requested_by,
            expires_at=status.expires_at or self.expires_at,
            phase=status.phase or Phase.PENDING,
            required_approvals=(
                self.policy.required_approvals if self.policy else spec.required_approvals
            ),
            approvers_users=spec.approvers_users,
            approvers_groups=spec.approvers_groups,
            slack_channel=spec.slack_channel,
            teams_conversation=spec.teams_conversation,
            approvals=tuple(a.user for a in status.approvals),
            decision=status.decision,
            plan_reading=self.marks.plan,
            notify_also=self.notify_also(status),
            policy=self.policy,
        )

    @classmethod
    def parse(cls, obj: Mapping[str, Any], key: bytes) -> Request:
        """Read an object; `key` checks Greenlight's marks. Raises ValueError on a body that the
        CRD's schema would not have admitted."""
        meta = obj.get("metadata") or {}
        annotations: Mapping[str, str] = meta.get("annotations") or {}
        spec = Spec.from_json(obj.get("spec") or {})
        namespace = str(meta.get("namespace", ""))
        created = parse_time(str(meta["creationTimestamp"]))
        uid = str(meta.get("uid", ""))
        return cls(
            namespace=namespace,
            name=str(meta.get("name", "")),
            uid=uid,
            resource_version=str(meta.get("resourceVersion", "")),
            created=created,
            spec=spec,
            status=Status.from_json(obj.get("status") or {}),
            marks=_marks(
                annotations,
                key,
                uid,
                created,
                Subject(namespace, spec.action, spec.target, spec.plan_digest),
            ),
            traceparent=str(annotations.get(ANN_TRACEPARENT, "")),
        )


_Checked = tuple[Stamp | None, EffectivePolicy | None, PlanReading | None]
_UNCHECKED: _Checked = (None, None, None)
STAMP_CACHE_SIZE = 1024
# Stamps whose MAC verified, by the digest of their text: a forged stamp (junk of any size, in
# a review sent to the webhook port) is never kept, and a kept one holds no copy of its text.
_stamps: dict[tuple[bytes, bytes, Subject, datetime], _Checked] = {}


def _checked_stamp(raw: str, key: bytes, subject: Subject, created: datetime) -> _Checked:
    """The stamp in `raw` if Greenlight issued it for this subject, with what admission decided.

    Cached: every event of a request parses the same stamp (its MAC covers the effective policy
    and the plan reading, whose canonical JSON was a tenth of the cost of a reconcile); the
    answer depends on nothing but these arguments."""
    cache_key = (hashlib.sha256(raw.encode(errors="surrogatepass")).digest(), key, subject, created)
    cached = _stamps.get(cache_key)
    if cached is not None:
        return cached
    try:
        stamp = Stamp.from_annotation(raw)
    except ValueError:
        return _UNCHECKED
    if not stamp.valid(key, subject, created):
        return _UNCHECKED
    try:
        policy = EffectivePolicy.from_json(stamp.policy) if stamp.policy else None
        plan = PlanReading.from_json(stamp.plan) if stamp.plan else None
    except (ValueError, TypeError, KeyError, RecursionError):
        return _UNCHECKED  # what admission decided cannot be read: never act on it
    if len(_stamps) >= STAMP_CACHE_SIZE:
        del _stamps[next(iter(_stamps))]  # the oldest
    checked = _stamps[cache_key] = (stamp, policy, plan)
    return checked


def _marks(
    annotations: Mapping[str, str], key: bytes, uid: str, created: datetime, subject: Subject
) -> Marks:
    raw = annotations.get(ANN_REQUESTED_BY)
    stamp, policy, plan = _checked_stamp(raw, key, subject, created) if raw else (None, None, None)
    records, untrusted = [], []
    for name, value in annotations.items():
        if not name.startswith(DECISION_RECORD_PREFIX):
            continue
        try:
            record = DecisionRecord.from_annotation(value)
        except ValueError:
            untrusted.append(name)
            continue
        if record.valid(key, uid):
            records.append(record)
        else:
            untrusted.append(name)
    records.sort(key=lambda r: (r.at, r.user))
    execution = None
    raw = annotations.get(ANN_EXECUTION)
    if raw is not None:
        try:
            execution = ExecutionRecord.from_annotation(raw)
        except ValueError:
            execution = None
        if execution is None or not execution.valid(key, uid):
            execution = None
            untrusted.append(ANN_EXECUTION)
    return Marks(stamp, tuple(records), tuple(sorted(untrusted)), policy, plan, execution)
