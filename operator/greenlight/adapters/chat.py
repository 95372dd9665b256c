"""What every chat channel adapter gets from the operator, and hands back.

A chat adapter (Teams in `adapters/teams`; Slack has the same shape in
`adapters/slack/interactions.py`) turns a click into a decision attempt. It never decides:
it calls `DecisionsPort.submit_decision`, which authorizes exactly like the kubectl path
(SubjectAccessReview, policy.approvers, the self-approval ban, a reason for deny, terminal
requests) and audits the attempt. Refusals the adapter decides itself, before an identity is
known (a forged token, an unknown user), go through `DecisionsPort.record_audit`, so every
attempt is on record once. Adding a channel is one package that implements
`adapters.notifiers.Notifier` and uses this port.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from greenlight.adapters.auditlog import AuditWriteError
from greenlight.core.model import Action, Identity, RequestView, Via

log = structlog.get_logger("greenlight.chat")

# The API server adds this group to every authenticated user; an identity a chat adapter maps
# carries it too, so a SubjectAccessReview answers the question it answers for kubectl.
AUTHENTICATED_GROUP = "system:authenticated"


class SubmitDecision(Protocol):
    async def __call__(
        self,
        namespace: str,
        name: str,
        identity: Identity,
        action: Action,
        reason: str,
        via: Via,
        *,
        uid: str = "",
    ) -> RequestView: ...


class FindRequestByUid(Protocol):
    async def __call__(self, uid: str) -> RequestView | None: ...


class RecordAudit(Protocol):
    async def __call__(
        self,
        event: str,
        *,
        request: Mapping[str, Any] | None,
        actor: str,
        outcome: str,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> object: ...


@dataclass(frozen=True)
class DecisionsPort:
    """The operator's decision path, injected so an adapter does not import the handlers."""

    submit_decision: SubmitDecision
    find_request_by_uid: FindRequestByUid
    record_audit: RecordAudit

    async def record_refused(
        self,
        via: Via,
        request: RequestView | None,
        *,
        actor: str,
        reason: str,
        details: Mapping[str, Any],
    ) -> None:
        """An attempt the adapter refused itself, on record. A failed audit write is logged:
        the person is told of the refusal either way, and nothing was decided."""
        try:
            await self.record_audit(
                "decision_attempted",
                request=audit_subject(request) if request is not None else None,
                actor=actor,
                outcome="refused",
                reason=reason,
                details={"via": via.value, **details},
            )
        except AuditWriteError as exc:
            log.error(
                "audit record of a refused chat attempt failed", via=via.value, error=str(exc)
            )


def authenticated(user: str, groups: tuple[str, ...] = ()) -> Identity:
    """The identity of a mapped chat user, with `system:authenticated` as kubectl's has."""
    all_groups = groups if AUTHENTICATED_GROUP in groups else (*groups, AUTHENTICATED_GROUP)
    return Identity(user=user, groups=all_groups)


def audit_subject(request: RequestView) -> dict[str, Any]:
    """The request as every audit record describes it (core.request.Request.subject)."""
    return {
        "namespace": request.namespace,
        "name": request.name,
        "uid": request.uid,
        "planDigest": request.plan_digest,
        "phase": request.phase.value,
        "requestedBy": request.requested_by or None,
    }


def already(request: RequestView) -> str:
    """ "already Approved by bob": why a terminal request takes no more decisions."""
    who = request.decision.by if request.decision else ""
    return f"already {request.phase.value}" + (f" by {who}" if who else "")


def b64url(raw: bytes) -> str:
    """base64url without padding: how the chat adapters' button and card tokens are spelled."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def from_b64url(text: str) -> bytes:
    """Strict decoding: only the canonical spelling of the bytes is accepted (ValueError)."""
    if not text.isascii():
        raise ValueError("non-ASCII characters")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(raw) != text:
        raise ValueError("non-canonical base64url")
    return raw
