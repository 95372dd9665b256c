"""Deciding: authorize one attempt and issue its decision record, the same way on every path.

The kubectl path (the admission webhook) and the chat paths (Slack) both call `authorize`: a
SubjectAccessReview for the RBAC verb, then the pure policy checks. A refusal is audited at once
(bounded, adapters/refusals.py) and answered with its reason. An allowed attempt becomes a
decision record signed with the operator's key (core/stamps.py); it is audited as allowed when
the operator sees it persisted on the object, so a write the API server refused afterwards
(a stale resourceVersion, a spec change in the same write) never appears as allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime

from greenlight.adapters.conflicts import StillConflicting, retry_on_conflict
from greenlight.adapters.ledger import Ledger
from greenlight.adapters.refusals import RefusalLog
from greenlight.core.model import Action, Identity, RequestView, Via
from greenlight.core.policy import Attempt, Verdict, judge, rbac_verb
from greenlight.core.request import Request
from greenlight.core.stamps import DecisionRecord, record_key
from greenlight.core.timefmt import now
from greenlight.kube import Kube, NotFound

# How long a chat click waits for the first list of the requests after a start (the click was
# acknowledged already, and Teams waits for the answer to its invoke).
LISTED_WAIT = 5.0


class DecisionRefused(Exception):
    """A decision attempt was refused; `message` tells the person why and what would work."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


UNVERIFIED = Verdict(
    False,
    "unverified_request",
    "this request was not stamped by Greenlight when it was created (no admission webhook "
    "covered it then), so it cannot be decided; an admin can re-create it: "
    "greenlight resubmit NAME",
)


async def authorize(
    kube: Kube,
    request: RequestView,
    identity: Identity,
    action: Action,
    reason: str,
    at: datetime,
    *,
    verified: bool = True,
) -> Verdict:
    """RBAC (SubjectAccessReview) first, then policy. Never raises for a refusal."""
    if not verified:
        return UNVERIFIED
    rbac_allowed = await kube.allowed(identity, rbac_verb(action), request.namespace, request.name)
    return judge(request, Attempt(identity, action, reason), rbac_allowed=rbac_allowed, now=at)


def issue(
    key: bytes, uid: str, identity: Identity, action: Action, reason: str, via: Via, at: datetime
) -> tuple[str, str]:
    """The signed decision record for an allowed attempt: (annotation key, value)."""
    record = DecisionRecord(
        user=identity.user, groups=identity.groups, action=action, at=at, via=via, reason=reason
    ).signed(key, uid)
    return record_key(identity.user), record.to_annotation()


async def refuse(
    refusals: RefusalLog,
    request: Request,
    identity: Identity,
    action: Action,
    via: Via,
    verdict: Verdict,
) -> None:
    await refusals.refuse(
        identity.user,
        verdict.code,
        request=request.subject(),
        details={
            "action": action.value,
            "via": via.value,
            "message": verdict.message,
            "groups": list(identity.groups),
        },
    )


@dataclass
class DecisionService:
    """The chat paths' entry point (the webhook issues its records in adapters/admission.py)."""

    kube: Kube
    refusals: RefusalLog
    ledger: Ledger
    marks_key: bytes

    async def get_request(self, namespace: str, name: str) -> RequestView:
        return Request.parse(await self.kube.get(namespace, name), self.marks_key).view()

    async def find_request_by_uid(self, uid: str) -> RequestView | None:
        """A live request by uid (chat buttons name the uid); None when it is gone or unknown.

        Right after a start (or a takeover) the requests are not listed yet: a click then waits
        for the list, up to LISTED_WAIT seconds, instead of being told its request is gone."""
        location = self.ledger.locate(uid)
        if location is None and not self.ledger.listed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ledger.listed.wait(), LISTED_WAIT)
            location = self.ledger.locate(uid)
        if location is None:
            return None
        try:
            request = Request.parse(await self.kube.get(*location), self.marks_key)
        except NotFound:
            return None
        return request.view() if request.uid == uid else None

    async def submit_decision(
        self,
        namespace: str,
        name: str,
        identity: Identity,
        action: Action,
        reason: str,
        via: Via,
        *,
        uid: str = "",
    ) -> RequestView:
        """Authorize and record one decision; raise DecisionRefused when refused.

        `uid` (a chat button's) must be the uid of the object read here: a request deleted and
        created again under the same name since the click was resolved is another request, and
        the decision is refused instead of landing on it."""

        async def attempt() -> RequestView:
            try:
                body = await self.kube.get(namespace, name)
            except NotFound:
                raise DecisionRefused("not_found", f"{namespace}/{name} no longer exists") from None
            request = Request.parse(body, self.marks_key)
            if uid and request.uid != uid:
                raise DecisionRefused(
                    "not_found",
                    f"{namespace}/{name} is no longer the request this button was for "
                    "(it was deleted and created again); decide the new one from its own message",
                )
            at = now()
            view = request.view()
            verdict = await authorize(
                self.kube,
                view,
                identity,
                action,
                reason,
                at,
                verified=request.marks.stamp is not None,
            )
            if not verdict.allowed:
                await refuse(self.refusals, request, identity, action, via, verdict)
                raise DecisionRefused(verdict.code, verdict.message)
            annotation, value = issue(
                self.marks_key, request.uid, identity, action, reason, via, at
            )
            updated = await self.kube.patch_annotations(
                namespace, name, {annotation: value}, resource_version=request.resource_version
            )
            return Request.parse(updated, self.marks_key).view()

        try:
            return await retry_on_conflict(attempt, attempts=5)
        except StillConflicting:
            raise DecisionRefused(
                "conflict", f"{namespace}/{name} kept changing; try again"
            ) from None
