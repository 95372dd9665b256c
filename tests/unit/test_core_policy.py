"""`policy.judge`: every refusal, its bounded code and its exact message."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest

from greenlight.core.model import Action, Decision, Identity, Phase, RequestView, Via
from greenlight.core.policy import Attempt, Verdict, judge, rbac_verb

NOW = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
EXPIRES = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
REQUESTER = "system:serviceaccount:ci:orchestrator"

PENDING = RequestView(
    namespace="ci",
    name="destroy-prod",
    uid="uid-1",
    action="pulumi destroy",
    target="production",
    workflow_id="wf-1",
    task_id="",
    on_behalf_of="",
    plan_summary="",
    plan_preview="",
    plan_digest="sha256:00",
    requested_by=REQUESTER,
    expires_at=EXPIRES,
    phase=Phase.PENDING,
    required_approvals=1,
)


def attempt(user: str, action: Action = Action.APPROVE, reason: str = "", *groups: str) -> Attempt:
    return Attempt(Identity(user, tuple(groups)), action, reason)


NOT_AUTHORIZED_APPROVE = (
    "user 'mallory' may not approve approvalrequests.greenlight.dev in namespace 'ci': "
    "RBAC grants no 'approve' verb (an admin can bind the ClusterRole greenlight-approver)"
)
NOT_AUTHORIZED_DENY = NOT_AUTHORIZED_APPROVE.replace("approve", "deny").replace(
    "greenlight-denyr", "greenlight-approver"
)


class Case(NamedTuple):
    id: str
    request: RequestView
    attempt: Attempt
    rbac_allowed: bool
    expected: Verdict
    now: datetime = NOW


CASES: list[
    tuple[str, RequestView, Attempt, bool, Verdict]
    | tuple[str, RequestView, Attempt, bool, Verdict, datetime]
] = [
    (
        "approve-ok",
        PENDING,
        attempt("alice"),
        True,
        Verdict(True, "ok", "approve by alice recorded on ci/destroy-prod"),
    ),
    (
        "deny-ok",
        PENDING,
        attempt("alice", Action.DENY, "wrong stack"),
        True,
        Verdict(True, "ok", "deny by alice recorded on ci/destroy-prod"),
    ),
    (
        "approve-without-rbac",
        PENDING,
        attempt("mallory"),
        False,
        Verdict(False, "not_authorized", NOT_AUTHORIZED_APPROVE),
    ),
    (
        "deny-without-rbac",
        PENDING,
        attempt("mallory", Action.DENY, "no"),
        False,
        Verdict(False, "not_authorized", NOT_AUTHORIZED_DENY),
    ),
    (
        "not-in-approvers",
        replace(PENDING, approvers_users=("bob", "carol"), approvers_groups=("sre",)),
        attempt("alice", Action.APPROVE, "", "devs"),
        True,
        Verdict(
            False,
            "not_in_approvers",
            "user 'alice' is not in policy.approvers of ci/destroy-prod "
            "(users: bob, carol; groups: sre)",
        ),
    ),
    (
        "not-in-approver-users-only",
        replace(PENDING, approvers_users=("bob",)),
        attempt("alice"),
        True,
        Verdict(
            False,
            "not_in_approvers",
            "user 'alice' is not in policy.approvers of ci/destroy-prod (users: bob; groups: -)",
        ),
    ),
    (
        "approver-group-ok",
        replace(PENDING, approvers_groups=("sre",)),
        attempt("alice", Action.APPROVE, "", "devs", "sre"),
        True,
        Verdict(True, "ok", "approve by alice recorded on ci/destroy-prod"),
    ),
    (
        "self-approval-requested-by",
        PENDING,
        attempt(REQUESTER),
        True,
        Verdict(
            False,
            "self_approval",
            f"user {REQUESTER!r} requested ci/destroy-prod and cannot approve it; another "
            "approver must (the requester may cancel instead)",
        ),
    ),
    (
        "self-approval-on-behalf-of",
        replace(PENDING, on_behalf_of="alice"),
        attempt("alice"),
        True,
        Verdict(
            False,
            "self_approval",
            "user 'alice' requested ci/destroy-prod and cannot approve it; another approver "
            "must (the requester may cancel instead)",
        ),
    ),
    (
        "requester-may-deny",
        replace(PENDING, on_behalf_of="alice"),
        attempt("alice", Action.DENY, "changed my mind"),
        True,
        Verdict(True, "ok", "deny by alice recorded on ci/destroy-prod"),
    ),
    (
        "deny-without-reason",
        PENDING,
        attempt("alice", Action.DENY, "   "),
        True,
        Verdict(
            False,
            "reason_required",
            "a deny needs a reason: add greenlight.dev/reason=<why> "
            "(or greenlight deny destroy-prod --reason <why>)",
        ),
    ),
    (
        "duplicate-approval",
        replace(PENDING, required_approvals=2, approvals=("alice",)),
        attempt("alice"),
        True,
        Verdict(True, "duplicate", "alice already approved ci/destroy-prod; counted once"),
    ),
    (
        "already-approved",
        replace(
            PENDING,
            phase=Phase.APPROVED,
            decision=Decision(Phase.APPROVED, "alice", NOW, Via.KUBECTL),
        ),
        attempt("bob", Action.DENY, "no"),
        True,
        Verdict(False, "already_decided", "ci/destroy-prod is already Approved by alice"),
    ),
    (
        "already-expired-phase",
        replace(
            PENDING,
            phase=Phase.EXPIRED,
            decision=Decision(Phase.EXPIRED, "greenlight", EXPIRES, Via.EXPIRY),
        ),
        attempt("bob"),
        True,
        Verdict(False, "already_decided", "ci/destroy-prod is already Expired by greenlight"),
    ),
    (
        "at-expires-at-before-the-operator-noticed",
        PENDING,
        attempt("bob"),
        True,
        Verdict(
            False,
            "already_decided",
            "ci/destroy-prod is already Expired (at 2026-03-01T12:30:00Z)",
        ),
        EXPIRES,
    ),
    (
        "cancel-by-requester-without-rbac",
        PENDING,
        attempt(REQUESTER, Action.CANCEL),
        False,
        Verdict(True, "ok", f"ci/destroy-prod cancelled by {REQUESTER}"),
    ),
    (
        "cancel-by-approver",
        PENDING,
        attempt("alice", Action.CANCEL),
        True,
        Verdict(True, "ok", "ci/destroy-prod cancelled by alice"),
    ),
    (
        "cancel-by-stranger",
        PENDING,
        attempt("mallory", Action.CANCEL),
        False,
        Verdict(
            False,
            "not_authorized",
            f"user 'mallory' may not cancel ci/destroy-prod: only the requester ({REQUESTER}) "
            "or an approver (RBAC verb 'approve') may cancel",
        ),
    ),
    (
        "cancel-by-approver-outside-policy-approvers",
        replace(PENDING, approvers_users=("bob",)),
        attempt("alice", Action.CANCEL),
        True,
        Verdict(
            False,
            "not_in_approvers",
            "user 'alice' is not in policy.approvers of ci/destroy-prod (users: bob; groups: -)",
        ),
    ),
]


@pytest.mark.parametrize("case", [Case(*c) for c in CASES], ids=[c[0] for c in CASES])
def test_judge_answers_with_code_and_exact_message(case: Case) -> None:
    verdict = judge(case.request, case.attempt, rbac_allowed=case.rbac_allowed, now=case.now)

    assert verdict == case.expected


def test_attempt_just_before_expires_at_is_still_judged() -> None:
    verdict = judge(
        PENDING, attempt("bob"), rbac_allowed=True, now=EXPIRES - timedelta(microseconds=1)
    )

    assert verdict.allowed


def test_refusals_are_checked_in_a_fixed_order() -> None:
    """RBAC first: a stranger learns nothing about the request's policy."""
    narrowed = replace(PENDING, approvers_users=("bob",), on_behalf_of="mallory")

    verdict = judge(narrowed, attempt("mallory"), rbac_allowed=False, now=NOW)

    assert verdict.code == "not_authorized"


@pytest.mark.parametrize(
    ("action", "verb"),
    [(Action.APPROVE, "approve"), (Action.DENY, "deny"), (Action.CANCEL, "approve")],
)
def test_each_action_is_checked_against_its_rbac_verb(action: Action, verb: str) -> None:
    assert rbac_verb(action) == verb


# -- one person, one identity (core/identity.py) --------------------------------------------

SELF_APPROVAL = (
    "user 'alice' requested ci/destroy-prod (as {who!r}) and cannot approve it; another "
    "approver must (the requester may cancel instead)"
)


@pytest.mark.parametrize(
    "on_behalf_of",
    ["Alice", "alice ", " ALICE", "alice@example.com", "Alice+ci@Example.com", "oidc:alice"],
)
def test_onbehalfof_in_other_spelling_cannot_approve(on_behalf_of: str) -> None:
    request = replace(PENDING, on_behalf_of=on_behalf_of)

    verdict = judge(request, attempt("alice"), rbac_allowed=True, now=NOW)

    assert verdict == Verdict(False, "self_approval", SELF_APPROVAL.format(who=on_behalf_of))


def test_onbehalfof_in_other_case_cannot_approve() -> None:
    request = replace(PENDING, on_behalf_of="Alice")

    verdict = judge(request, attempt("alice"), rbac_allowed=True, now=NOW)

    assert (verdict.allowed, verdict.code) == (False, "self_approval")


def test_onbehalfof_human_cannot_approve_under_her_email_identity() -> None:
    """The Slack email mapping makes alice `alice@example.com`; she is still the requester."""
    request = replace(PENDING, on_behalf_of="alice")

    verdict = judge(request, attempt("alice@example.com"), rbac_allowed=True, now=NOW)

    assert (verdict.allowed, verdict.code) == (False, "self_approval")


def test_requester_under_another_spelling_cannot_approve() -> None:
    verdict = judge(PENDING, attempt(REQUESTER.upper()), rbac_allowed=True, now=NOW)

    assert (verdict.allowed, verdict.code) == (False, "self_approval")


def test_cyrillic_lookalike_onbehalfof_refuses_every_approval() -> None:
    """`alice` spelled with a Cyrillic a slipped past admission: nobody can tell who it names,
    so nobody approves; the request can still be denied or cancelled."""
    request = replace(PENDING, on_behalf_of="\u0430lice")

    for user in ("alice", "bob"):
        verdict = judge(request, attempt(user), rbac_allowed=True, now=NOW)
        assert (verdict.allowed, verdict.code) == (False, "self_approval")
        assert "U+0430 (CYRILLIC SMALL LETTER A)" in verdict.message
        assert "spec.requester.onBehalfOf" in verdict.message
    denied = judge(request, attempt("bob", Action.DENY, "no"), rbac_allowed=True, now=NOW)
    assert denied.allowed


def test_cyrillic_lookalike_decider_counts_as_the_requester() -> None:
    request = replace(PENDING, on_behalf_of="alice")

    verdict = judge(request, attempt("\u0430lice"), rbac_allowed=True, now=NOW)

    assert (verdict.allowed, verdict.code) == (False, "self_approval")


def test_zero_width_onbehalfof_cannot_hide_the_requester() -> None:
    request = replace(PENDING, on_behalf_of="ali\u200bce")

    verdict = judge(request, attempt("alice"), rbac_allowed=True, now=NOW)

    assert (verdict.allowed, verdict.code) == (False, "self_approval")


def test_someone_else_may_still_approve_a_request_on_behalf_of_alice() -> None:
    request = replace(PENDING, on_behalf_of="Alice@example.com")

    verdict = judge(request, attempt("bob"), rbac_allowed=True, now=NOW)

    assert verdict == Verdict(True, "ok", "approve by bob recorded on ci/destroy-prod")


@pytest.mark.parametrize(
    "reason",
    ["\u200b", " \u200b ", "\u200c\u200d\u2060\ufeff", "\u202e\u202c", "\t\n", "\x00", "\u3164"],
    ids=["zwsp", "spaced-zwsp", "joiners-and-bom", "bidi", "whitespace", "nul", "hangul-filler"],
)
def test_zero_width_reason_is_no_reason(reason: str) -> None:
    verdict = judge(PENDING, attempt("bob", Action.DENY, reason), rbac_allowed=True, now=NOW)

    assert (verdict.allowed, verdict.code) == (False, "reason_required")


def test_short_visible_reason_is_a_reason() -> None:
    verdict = judge(PENDING, attempt("bob", Action.DENY, "no"), rbac_allowed=True, now=NOW)

    assert verdict.allowed


@pytest.mark.parametrize("again", ["Alice", "alice@example.com", "\uff41lice"])
def test_same_person_under_another_spelling_is_counted_once(again: str) -> None:
    request = replace(PENDING, required_approvals=2, approvals=("alice",))

    verdict = judge(request, attempt(again), rbac_allowed=True, now=NOW)

    assert (verdict.allowed, verdict.code) == (True, "duplicate")


def test_second_approver_is_counted() -> None:
    request = replace(PENDING, required_approvals=2, approvals=("alice",))

    verdict = judge(request, attempt("bob"), rbac_allowed=True, now=NOW)

    assert verdict.code == "ok"


def test_policy_approvers_are_compared_canonically() -> None:
    request = replace(PENDING, approvers_users=("Alice ", "bob"))

    verdict = judge(request, attempt("alice"), rbac_allowed=True, now=NOW)

    assert verdict.code == "ok"


def test_policy_approvers_are_not_widened_to_other_spellings_of_a_person() -> None:
    """A listing grants a right, so only the canonical name matches, not `alice@evil.example`."""
    request = replace(PENDING, approvers_users=("alice",))

    verdict = judge(request, attempt("alice@evil.example"), rbac_allowed=True, now=NOW)

    assert verdict.code == "not_in_approvers"


@pytest.mark.parametrize("other", ["ALICE", "Alice", "alice ", "\uff41\uff4c\uff49\uff43\uff45"])
def test_another_account_spelled_like_a_listed_approver_is_not_admitted(other: str) -> None:
    """`ALICE` or a full-width `alice` is another Kubernetes account than `alice`: being listed
    grants a right, so a decider's own spelling is never folded into a listed name."""
    request = replace(PENDING, approvers_users=("alice",))

    verdict = judge(request, attempt(other), rbac_allowed=True, now=NOW)

    assert verdict.code == "not_in_approvers"
    exact = replace(PENDING, approvers_users=(other,))
    assert judge(exact, attempt(other), rbac_allowed=True, now=NOW).code == "ok"


def test_another_account_spelled_like_the_requester_may_not_cancel() -> None:
    request = replace(PENDING, on_behalf_of="alice")

    verdict = judge(request, attempt("ALICE", Action.CANCEL), rbac_allowed=False, now=NOW)

    assert verdict.code == "not_authorized"


def test_requester_in_other_case_may_cancel() -> None:
    request = replace(PENDING, on_behalf_of="Alice")

    verdict = judge(request, attempt("alice", Action.CANCEL), rbac_allowed=False, now=NOW)

    assert verdict == Verdict(True, "ok", "ci/destroy-prod cancelled by alice")


def test_email_spelling_of_the_requester_does_not_grant_cancel() -> None:
    request = replace(PENDING, on_behalf_of="alice")

    verdict = judge(
        request, attempt("alice@evil.example", Action.CANCEL), rbac_allowed=False, now=NOW
    )

    assert verdict.code == "not_authorized"
