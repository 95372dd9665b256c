"""Names that users, scripts and tests rely on (DESIGN §2, §3), and the plain data the core uses."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from greenlight.core.plans import PlanReading

GROUP = "greenlight.dev"
VERSION = "v1alpha1"
PLURAL = "approvalrequests"
KIND = "ApprovalRequest"
SHORT_NAME = "apr"

# Annotations a user (or the CLI) writes; the admission webhook consumes them.
ANN_DECISION = f"{GROUP}/decision"
ANN_REASON = f"{GROUP}/reason"
ANN_CANCEL = f"{GROUP}/cancel"
ANN_TRACEPARENT = f"{GROUP}/traceparent"
# Claiming an Approved request's receipt and reporting the execution (`greenlight exec`).
ANN_CLAIM = f"{GROUP}/claim"  # value: the planDigest the executor verified
ANN_FINISH = f"{GROUP}/finish"  # value: the command's exit code, or "unknown"
# Annotations only the operator (its webhook or its own identity) may write.
ANN_REQUESTED_BY = f"{GROUP}/requested-by"
DECISION_RECORD_PREFIX = f"decisions.{GROUP}/"
ANN_EXECUTION = f"{GROUP}/execution"  # the signed execution record (core/stamps.ExecutionRecord)
OPERATOR_OWNED_PREFIXES = (ANN_REQUESTED_BY, DECISION_RECORD_PREFIX, ANN_EXECUTION)

# How the admission webhook's message starts when a policy refuses a create (`check` reads it).
POLICY_REFUSAL = "refused by policy"

# RBAC verbs checked with a SubjectAccessReview (the CertificateSigningRequest model).
VERB_APPROVE = "approve"
VERB_DENY = "deny"


class Phase(enum.StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    DENIED = "Denied"
    EXPIRED = "Expired"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self is not Phase.PENDING


class Action(enum.StrEnum):
    """What a person asks for when they decide."""

    APPROVE = "approve"
    DENY = "deny"
    CANCEL = "cancel"


class Via(enum.StrEnum):
    SLACK = "slack"
    TEAMS = "teams"
    KUBECTL = "kubectl"
    EXPIRY = "expiry"
    POLICY = "policy"  # decided at once by an AutoApprove policy


@dataclass(frozen=True)
class Identity:
    """An authenticated Kubernetes identity, as the API server reported it."""

    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The final answer on a request (`status.decision`)."""

    outcome: Phase
    by: str
    at: datetime
    via: Via
    reason: str = ""


class ApproverSetRules(Protocol):
    """One source's restriction on who decides (core/policies.ApproverSet)."""

    @property
    def users(self) -> tuple[str, ...]: ...
    @property
    def groups(self) -> tuple[str, ...]: ...
    @property
    def source(self) -> str: ...
    def admits(self, user: str, groups: Iterable[str]) -> bool: ...


class ApproverRules(Protocol):
    """What the per-attempt judge reads of the effective policy (core/policies.EffectivePolicy;
    a protocol here so the plain data below needs no import of the policy engine)."""

    @property
    def approvers(self) -> Sequence[ApproverSetRules]: ...
    def admits(self, user: str, groups: Iterable[str]) -> bool: ...


@dataclass(frozen=True)
class RequestView:
    """What notifiers and policy need to know about one ApprovalRequest (read-only)."""

    namespace: str
    name: str
    uid: str
    action: str
    target: str
    workflow_id: str
    task_id: str
    on_behalf_of: str
    plan_summary: str
    plan_preview: str  # the plan's first lines, bounded (core/request.preview)
    plan_digest: str
    requested_by: str
    expires_at: datetime | None
    phase: Phase
    required_approvals: int
    approvers_users: tuple[str, ...] = ()
    approvers_groups: tuple[str, ...] = ()
    slack_channel: str = ""
    approvals: tuple[str, ...] = ()
    decision: Decision | None = None
    teams_conversation: str = ""  # spec.notify.teams.conversation
    plan_reading: PlanReading | None = None  # status.plan: Greenlight's reading of the plan
    # Channels the effective policy adds, as (notifier, channel) pairs.
    notify_also: tuple[tuple[str, str], ...] = ()
    # The effective policy stamped at admission; None: the request's own rules only.
    policy: ApproverRules | None = None

    def policy_channels(self, notifier: str) -> tuple[str, ...]:
        return tuple(channel for via, channel in self.notify_also if via == notifier)
