"""Deciding: authorize one attempt and record it, the same way for every path.

The kubectl path (the admission webhook) and the Slack path both call `authorize`: a
SubjectAccessReview for the RBAC verb, then the pure policy checks. Every attempt, allowed or
refused, is audited before its answer is given; when the audit record cannot be written, the
attempt is refused (the gate fails closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from greenlight.adapters.auditlog import AuditLog, AuditWriteError, request_summary
from greenlight.adapters.kube import Conflict, Kube, NotFound
from greenlight.core import lifecycle
from greenlight.core.model import Action, Identity, RequestView, Via
from greenlight.core.policy import Attempt, Verdict, judge, rbac_verb
from greenlight.core.timefmt import now
from greenlight.telemetry import metrics


class DecisionRefused(Exception):
    """A decision attempt was refused; `message` tells the person why and what would work."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def authorize(
    kube: Kube,
    request: RequestView,
    identity: Identity,
    action: Action,
    reason: str,
    at: datetime,
) -> Verdict:
    """RBAC (SubjectAccessReview) first, then policy. Never raises for a refusal."""
    rbac_allowed = await kube.allowed(identity, rbac_verb(action), request.namespace, request.name)
    return judge(request, Attempt(identity, action, reason), rbac_allowed=rbac_allowed, now=at)


async def audit_attempt(
    audit: AuditLog,
    obj: Mapping[str, Any],
    identity: Identity,
    action: Action,
    via: Via,
    verdict: Verdict,
) -> None:
    """Record the attempt; raise DecisionRefused when the record cannot be written."""
    if not verdict.allowed:
        metrics.refuse(verdict.code)
    try:
        await audit.record(
            "decision_attempted",
            request=request_summary(obj),
            actor=identity.user,
            outcome="allowed" if verdict.allowed else "refused",
            reason="" if verdict.allowed else verdict.code,
            details={
                "action": action.value,
                "via": via.value,
                "message": verdict.message,
                "groups": list(identity.groups),
            },
        )
    except AuditWriteError as exc:
        metrics.AUDIT_WRITE_FAILURES.inc()
        raise DecisionRefused(
            "audit_unavailable",
            f"the decision was not recorded because the audit log is unavailable ({exc}); "
            "try again later",
        ) from exc


@dataclass
class DecisionService:
    """The Slack path's entry point (the webhook uses `authorize` and `audit_attempt` directly)."""

    kube: Kube
    audit: AuditLog
    locations: dict[str, tuple[str, str]] = field(default_factory=dict)  # uid -> (ns, name)

    async def get_request(self, namespace: str, name: str) -> RequestView:
        return lifecycle.view(await self.kube.get(namespace, name))

    async def find_request_by_uid(self, uid: str) -> RequestView | None:
        location = self.locations.get(uid)
        if location is not None:
            try:
                obj = await self.kube.get(*location)
            except NotFound:
                return None
            if (obj.get("metadata") or {}).get("uid") == uid:
                return lifecycle.view(obj)
        for obj in await self.kube.list_all():
            meta = obj.get("metadata") or {}
            if meta.get("uid") == uid:
                self.locations[uid] = (str(meta["namespace"]), str(meta["name"]))
                return lifecycle.view(obj)
        return None

    async def submit_decision(
        self, namespace: str, name: str, identity: Identity, action: Action, reason: str, via: Via
    ) -> RequestView:
        """Authorize, audit and record one decision; raise DecisionRefused when refused."""
        for _ in range(5):
            obj = await self.kube.get(namespace, name)
            at = now()
            request = lifecycle.view(obj)
            verdict = await authorize(self.kube, request, identity, action, reason, at)
            await audit_attempt(self.audit, obj, identity, action, via, verdict)
            if not verdict.allowed:
                raise DecisionRefused(verdict.code, verdict.message)
            if verdict.code == "duplicate":
                return request
            record = lifecycle.DecisionRecord(
                user=identity.user,
                groups=identity.groups,
                action=action,
                at=at,
                via=via,
                reason=reason,
            )
            try:
                updated = await self.kube.patch_annotations(
                    namespace,
                    name,
                    {lifecycle.record_key(identity.user): record.to_annotation()},
                    resource_version=str(obj["metadata"]["resourceVersion"]),
                )
            except Conflict:
                continue
            return lifecycle.view(updated)
        raise DecisionRefused("conflict", f"{namespace}/{name} kept changing; try again")
