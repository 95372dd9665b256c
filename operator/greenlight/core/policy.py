"""Who may decide, beyond RBAC: pure checks shared by the kubectl (webhook) and Slack paths.

RBAC answers "may this identity use the approve/deny verb here" (a SubjectAccessReview the
adapter performs); this module answers everything else, in a fixed order, so every path refuses
the same attempt with the same reason and message.

Names are compared as `greenlight.core.identity` says: where a match grants something (the
requester may cancel, `policy.approvers` lists you) after `canonical`; where a match takes
something away (the self-approval ban, counting a quorum) with `same_person`, which fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from greenlight.core.identity import (
    ON_BEHALF_OF_FIELD,
    grants,
    meaningful_text,
    name_problem,
    same_person,
)
from greenlight.core.model import Action, Identity, RequestView
from greenlight.core.policies import EffectivePolicy
from greenlight.core.timefmt import format_time


@dataclass(frozen=True)
class Attempt:
    identity: Identity
    action: Action
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    code: str  # "ok", "duplicate", or a refusal reason (a bounded metric label)
    message: str


def rbac_verb(action: Action) -> str:
    """The RBAC verb a SubjectAccessReview checks for this action (cancel counts as approve)."""
    return "deny" if action is Action.DENY else "approve"


def judge(request: RequestView, attempt: Attempt, *, rbac_allowed: bool, now: datetime) -> Verdict:
    """Whether one decision attempt is allowed; a refusal says what was wrong and what works."""
    user = attempt.identity.user
    ref = f"{request.namespace}/{request.name}"
    if request.phase.terminal:
        return _refuse("already_decided", f"{ref} is {_already(request)}")
    if request.expires_at is not None and now >= request.expires_at:
        at = format_time(request.expires_at)
        return _refuse("already_decided", f"{ref} is already Expired (at {at})")

    if attempt.action is Action.CANCEL:
        # A cancel stops the action as surely as a deny, so an approver who may not decide this
        # request (outside policy.approvers) may not cancel it either; the requester always may.
        if grants(_requesters(request), user):
            return Verdict(True, "ok", f"{ref} cancelled by {user}")
        if rbac_allowed and not _in_approvers(request, attempt.identity):
            return _not_in_approvers(request, attempt.identity)
        if rbac_allowed:
            return Verdict(True, "ok", f"{ref} cancelled by {user}")
        return _refuse(
            "not_authorized",
            f"user {user!r} may not cancel {ref}: only the requester ({request.requested_by}) "
            "or an approver (RBAC verb 'approve') may cancel",
        )

    verb = rbac_verb(attempt.action)
    if not rbac_allowed:
        return _refuse(
            "not_authorized",
            f"user {user!r} may not {verb} approvalrequests.greenlight.dev in namespace "
            f"{request.namespace!r}: RBAC grants no {verb!r} verb "
            "(an admin can bind the ClusterRole greenlight-approver)",
        )
    if not _in_approvers(request, attempt.identity):
        return _not_in_approvers(request, attempt.identity)
    if attempt.action is Action.APPROVE:
        refusal = _self_approval(request, user)
        if refusal is not None:
            return refusal
    if attempt.action is Action.DENY and not meaningful_text(attempt.reason):
        return _refuse(
            "reason_required",
            "a deny needs a reason: add greenlight.dev/reason=<why> "
            f"(or greenlight deny {request.name} --reason <why>)",
        )
    if attempt.action is Action.APPROVE and any(same_person(user, a) for a in request.approvals):
        return Verdict(True, "duplicate", f"{user} already approved {ref}; counted once")
    return Verdict(True, "ok", f"{attempt.action.value} by {user} recorded on {ref}")


def _refuse(code: str, message: str) -> Verdict:
    return Verdict(False, code, message)


def _not_in_approvers(request: RequestView, identity: Identity) -> Verdict:
    policy = request.policy
    if policy is not None and _in_own_approvers(request, identity):
        for approvers in policy.approvers:
            if not approvers.admits(identity.user, identity.groups):
                return _refuse(
                    "not_in_approvers",
                    f"user {identity.user!r} may not decide {request.namespace}/{request.name}: "
                    f"{approvers.source or 'the effective policy'} allows only "
                    + _people(approvers.users, approvers.groups),
                )
    return _refuse(
        "not_in_approvers",
        f"user {identity.user!r} is not in policy.approvers of {request.namespace}/{request.name} "
        f"(users: {_listing(request.approvers_users)}; "
        f"groups: {_listing(request.approvers_groups)})",
    )


def _already(request: RequestView) -> str:
    decision = request.decision
    if decision is None:
        return f"already {request.phase.value}"
    return f"already {decision.outcome.value} by {decision.by}"


def _self_approval(request: RequestView, user: str) -> Verdict | None:
    """The refusal when `user` may be the requester, or an `onBehalfOf` nobody can be told from."""
    ref = f"{request.namespace}/{request.name}"
    if request.on_behalf_of:
        problem = name_problem(request.on_behalf_of, ON_BEHALF_OF_FIELD)
        if problem is not None:
            return _refuse(
                "self_approval",
                f"{ref} cannot be approved: {problem}; the self-approval ban cannot tell who "
                "it names (deny or cancel it, and create it again)",
            )
    for who in _requesters(request):
        if same_person(user, who):
            spelled = "" if who == user else f" (as {who!r})"
            return _refuse(
                "self_approval",
                f"user {user!r} requested {ref}{spelled} and cannot approve it; another "
                "approver must (the requester may cancel instead)",
            )
    return None


def _requesters(request: RequestView) -> tuple[str, ...]:
    return tuple(who for who in (request.requested_by, request.on_behalf_of) if who)


def _in_approvers(request: RequestView, identity: Identity) -> bool:
    """Allowed by the request's own `policy.approvers` and by every set the effective policy
    restricts to (the policies can only narrow who decides)."""
    policy = request.policy
    if policy is not None and not policy.admits(identity.user, identity.groups):
        return False
    return _in_own_approvers(request, identity)


def _in_own_approvers(request: RequestView, identity: Identity) -> bool:
    """Allowed by the request's own `policy.approvers` (no list: anyone RBAC allows)."""
    if not request.approvers_users and not request.approvers_groups:
        return True
    return grants(request.approvers_users, identity.user) or bool(
        set(identity.groups) & set(request.approvers_groups)
    )


def _people(users: tuple[str, ...], groups: tuple[str, ...]) -> str:
    parts = ([f"users {', '.join(users)}"] if users else []) + (
        [f"members of {', '.join(groups)}"] if groups else []
    )
    return " and ".join(parts) or "nobody"


def _listing(items: tuple[str, ...]) -> str:
    return ", ".join(items) if items else "-"


Approver = tuple[str, Sequence[str]]  # (user, groups as the API server reported them)


def quorum_met(effective: EffectivePolicy, approvals: Sequence[Approver]) -> bool:
    """Whether the approvals so far meet the effective policy: `requiredApprovals` distinct
    people (`same_person`: two spellings of one person count once), each admitted by every
    restricting approver set, and at least `count` of them in each `fromGroups` group."""
    counted = _distinct(effective, approvals)
    return len(counted) >= effective.required_approvals and not _groups_short(effective, counted)


def _distinct(effective: EffectivePolicy, approvals: Sequence[Approver]) -> list[Approver]:
    counted: list[Approver] = []
    for user, groups in approvals:
        if not effective.admits(user, groups):
            continue
        if not any(same_person(user, other) for other, _ in counted):
            counted.append((user, groups))
    return counted


def _groups_short(effective: EffectivePolicy, counted: Sequence[Approver]) -> dict[str, int]:
    """group -> how many more approvers from it `fromGroups` still needs (only those short)."""
    short: dict[str, int] = {}
    for quorum in effective.from_groups:
        have = sum(1 for _, groups in counted if quorum.group in groups)
        if have < quorum.count:
            short[quorum.group] = quorum.count - have
    return short
