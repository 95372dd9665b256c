"""Who may decide (issue 3), through real `kubectl` as real (impersonated) users.

alice and bob are approvers in the namespace (RoleBinding to greenlight-approver), mallory may
get/list/patch requests but holds no approve/deny verb, the orchestrator service account is the
requester (greenlight-requester), and the admin is in system:masters. Every refusal is checked
for its exact message, for leaving the request untouched, and for its audit record.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import pytest
from tests.support.concurrency import at_once
from tests.support.kubectl import Kubectl
from tests.support.manifests import annotate, approval_request, create, get, poll, wait_phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.core.stamps import record_key

ADMIN = "root"
ADMIN_GROUPS = ("system:masters",)
WEBHOOK_DENIED = "denied the request: "


def not_authorized(user: str, verb: str, ns: str) -> str:
    return (
        f"user {user!r} may not {verb} approvalrequests.greenlight.dev in namespace {ns!r}: "
        f"RBAC grants no {verb!r} verb (an admin can bind the ClusterRole greenlight-approver)"
    )


def decision_args(action: str, reason: str) -> list[str]:
    if action == "cancel":
        return ["greenlight.dev/cancel=true"]
    args = [f"greenlight.dev/decision={action}"]
    return [*args, f"greenlight.dev/reason={reason}"] if reason else args


def attempts(operator: OperatorProcess, uid: str) -> list[dict[str, Any]]:
    return [
        r
        for r in operator.audit_records()
        if r["event"] == "decision_attempted" and (r.get("request") or {}).get("uid") == uid
    ]


def assert_refusal_audited(operator: OperatorProcess, uid: str, user: str, code: str) -> None:
    refused = [(r["actor"], r["outcome"], r["reason"]) for r in attempts(operator, uid)]
    assert (user, "refused", code) in refused, refused


@dataclass(frozen=True)
class Case:
    who: str  # alice | bob | mallory | orchestrator | admin
    action: str  # approve | deny | cancel
    reason: str
    phase: str | None  # the phase it ends in, or None when refused
    code: str = "ok"


MATRIX = [
    Case("alice", "approve", "", "Approved"),
    Case("alice", "deny", "wrong stack", "Denied"),
    Case("alice", "deny", "", None, "reason_required"),
    Case("alice", "cancel", "", "Cancelled"),
    Case("bob", "approve", "ship it", "Approved"),
    Case("bob", "deny", "not today", "Denied"),
    Case("mallory", "approve", "", None, "not_authorized"),
    Case("mallory", "deny", "because", None, "not_authorized"),
    Case("mallory", "cancel", "", None, "not_authorized"),
    Case("orchestrator", "approve", "", None, "not_authorized"),
    Case("orchestrator", "deny", "oops", None, "not_authorized"),
    Case("orchestrator", "cancel", "", "Cancelled"),
    Case("admin", "approve", "", "Approved"),
    Case("admin", "deny", "freeze", "Denied"),
    Case("admin", "cancel", "", "Cancelled"),
]


def identity(people: People, who: str) -> tuple[str, tuple[str, ...]]:
    if who == "admin":
        return ADMIN, ADMIN_GROUPS
    if who == "orchestrator":
        return people.orchestrator, ()
    return str(getattr(people, who)), ()


def expected_message(case: Case, user: str, ns: str) -> str:
    ref = f"{ns}/apr"
    if case.code == "reason_required":
        return (
            "a deny needs a reason: add greenlight.dev/reason=<why> "
            "(or greenlight deny apr --reason <why>)"
        )
    if case.action == "cancel":
        return (
            f"user {user!r} may not cancel {ref}: only the requester "
            f"(system:serviceaccount:{ns}:orchestrator) or an approver (RBAC verb 'approve') "
            "may cancel"
        )
    return not_authorized(user, case.action, ns)


@pytest.mark.parametrize(
    "case",
    MATRIX,
    ids=[
        f"{c.who}-{c.action}{'-noreason' * (c.action == 'deny' and not c.reason)}" for c in MATRIX
    ],
)
def test_decision_matrix(
    operator: OperatorProcess, people: People, kubectl: Kubectl, case: Case
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("apr", ns), people.orchestrator)
    uid = wait_phase(kubectl, ns, "apr", "Pending")["metadata"]["uid"]
    user, groups = identity(people, case.who)

    done = annotate(
        kubectl, ns, "apr", *decision_args(case.action, case.reason), as_user=user, as_groups=groups
    )

    if case.phase is not None:
        assert done.returncode == 0, done.stderr
        obj = wait_phase(kubectl, ns, "apr", case.phase)
        decision = obj["status"]["decision"]
        assert (decision["by"], decision["via"], decision["reason"]) == (
            user,
            "kubectl",
            case.reason,
        )
        allowed = [(r["actor"], r["outcome"]) for r in attempts(operator, uid)]
        assert allowed == [(user, "allowed")]
        annotations = obj["metadata"]["annotations"]
        assert "greenlight.dev/decision" not in annotations
        assert "greenlight.dev/cancel" not in annotations
        assert record_key(user) in annotations
    else:
        assert done.returncode != 0
        assert WEBHOOK_DENIED + expected_message(case, user, ns) in done.stderr, done.stderr
        obj = get(kubectl, ns, "apr")
        assert obj["status"]["phase"] == "Pending"
        assert "decision" not in obj["status"]
        assert "greenlight.dev/decision" not in obj["metadata"]["annotations"]
        assert_refusal_audited(operator, uid, user, case.code)


def test_policy_approvers_narrow_who_may_decide(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    policy = {"requiredApprovals": 1, "approvers": {"users": ["bob"]}}
    create(kubectl, approval_request("apr", ns, policy=policy), people.orchestrator)
    uid = wait_phase(kubectl, ns, "apr", "Pending")["metadata"]["uid"]

    for action in ("approve", "cancel"):
        refused = annotate(kubectl, ns, "apr", *decision_args(action, ""), as_user="alice")
        assert refused.returncode != 0
        assert (
            WEBHOOK_DENIED + f"user 'alice' is not in policy.approvers of {ns}/apr "
            "(users: bob; groups: -)"
        ) in refused.stderr
    mallory = annotate(kubectl, ns, "apr", "greenlight.dev/decision=approve", as_user="mallory")
    assert not_authorized("mallory", "approve", ns) in mallory.stderr
    allowed = annotate(kubectl, ns, "apr", "greenlight.dev/decision=approve", as_user="bob")

    assert allowed.returncode == 0, allowed.stderr
    assert wait_phase(kubectl, ns, "apr", "Approved")["status"]["decision"]["by"] == "bob"
    assert_refusal_audited(operator, uid, "alice", "not_in_approvers")


def test_policy_approver_groups_match_the_callers_groups(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    policy = {"requiredApprovals": 1, "approvers": {"groups": ["sre"]}}
    create(kubectl, approval_request("apr", ns, policy=policy), people.orchestrator)
    wait_phase(kubectl, ns, "apr", "Pending")

    outsider = annotate(
        kubectl, ns, "apr", "greenlight.dev/decision=approve", as_user="carol", as_groups=("dev",)
    )
    member = annotate(
        kubectl, ns, "apr", "greenlight.dev/decision=approve", as_user="alice", as_groups=("sre",)
    )

    assert outsider.returncode != 0
    assert (
        f"user 'carol' is not in policy.approvers of {ns}/apr (users: -; groups: sre)"
        in outsider.stderr
    )
    assert member.returncode == 0, member.stderr
    assert wait_phase(kubectl, ns, "apr", "Approved")["status"]["decision"]["by"] == "alice"


def test_requester_who_is_also_an_approver_cannot_approve_its_own_request(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    kubectl(
        "-n", ns, "create", "rolebinding", "alice-requests",
        "--clusterrole=greenlight-requester", "--user=alice",
    )  # fmt: skip
    create(kubectl, approval_request("apr", ns), "alice")
    obj = wait_phase(kubectl, ns, "apr", "Pending")
    assert obj["status"]["requestedBy"] == "alice"

    own = annotate(kubectl, ns, "apr", "greenlight.dev/decision=approve", as_user="alice")

    assert own.returncode != 0
    assert (
        WEBHOOK_DENIED + f"user 'alice' requested {ns}/apr and cannot approve it; another "
        "approver must (the requester may cancel instead)"
    ) in own.stderr
    assert_refusal_audited(operator, obj["metadata"]["uid"], "alice", "self_approval")
    assert (
        annotate(kubectl, ns, "apr", "greenlight.dev/decision=approve", as_user="bob").returncode
        == 0
    )
    assert wait_phase(kubectl, ns, "apr", "Approved")["status"]["decision"]["by"] == "bob"


def test_human_named_on_behalf_of_cannot_approve_but_may_cancel(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    requester = {"workflowId": "wf-1", "onBehalfOf": "bob"}
    create(kubectl, approval_request("apr", ns, requester=requester), people.orchestrator)
    uid = wait_phase(kubectl, ns, "apr", "Pending")["metadata"]["uid"]

    own = annotate(kubectl, ns, "apr", "greenlight.dev/decision=approve", as_user="bob")

    assert own.returncode != 0
    assert f"user 'bob' requested {ns}/apr and cannot approve it" in own.stderr
    assert_refusal_audited(operator, uid, "bob", "self_approval")
    assert annotate(kubectl, ns, "apr", "greenlight.dev/cancel=true", as_user="bob").returncode == 0
    assert wait_phase(kubectl, ns, "apr", "Cancelled")["status"]["decision"]["by"] == "bob"


def test_decision_on_a_terminal_request_says_who_decided(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("apr", ns), people.orchestrator)
    uid = wait_phase(kubectl, ns, "apr", "Pending")["metadata"]["uid"]
    assert (
        annotate(kubectl, ns, "apr", "greenlight.dev/decision=approve", as_user="alice").returncode
        == 0
    )
    wait_phase(kubectl, ns, "apr", "Approved")

    for user, args in [
        ("bob", decision_args("deny", "too late")),
        ("bob", decision_args("approve", "")),
        ("alice", decision_args("approve", "")),
        (people.orchestrator, decision_args("cancel", "")),
    ]:
        late = annotate(kubectl, ns, "apr", *args, as_user=user)
        assert late.returncode != 0
        assert WEBHOOK_DENIED + f"{ns}/apr is already Approved by alice" in late.stderr
        assert_refusal_audited(operator, uid, user, "already_decided")
    assert get(kubectl, ns, "apr")["status"]["decision"]["by"] == "alice"


def test_parallel_approvals_from_two_users_both_count(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    """Two `kubectl annotate` at the same instant: both land (one decision record per user)."""
    ns = people.namespace
    rounds = 3
    for number in range(rounds):
        policy = {"requiredApprovals": 2}
        create(kubectl, approval_request(f"q{number}", ns, policy=policy), people.orchestrator)
    for number in range(rounds):
        wait_phase(kubectl, ns, f"q{number}", "Pending")

    for number in range(rounds):
        results = at_once(
            *(
                functools.partial(
                    annotate, kubectl, ns, f"q{number}", "greenlight.dev/decision=approve",
                    as_user=user,
                )
                for user in ("alice", "bob")
            )
        )  # fmt: skip
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]

    for number in range(rounds):
        status = wait_phase(kubectl, ns, f"q{number}", "Approved")["status"]
        assert sorted(a["user"] for a in status["approvals"]) == ["alice", "bob"]
        assert status["decision"]["by"] in ("alice", "bob")


def test_the_same_user_approving_twice_counts_once(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(
        kubectl, approval_request("apr", ns, policy={"requiredApprovals": 2}), people.orchestrator
    )
    uid = wait_phase(kubectl, ns, "apr", "Pending")["metadata"]["uid"]

    for _ in range(2):
        again = annotate(kubectl, ns, "apr", "greenlight.dev/decision=approve", as_user="alice")
        assert again.returncode == 0, again.stderr
        poll(lambda: get(kubectl, ns, "apr")["status"].get("approvals"), timeout=10)

    status = get(kubectl, ns, "apr")["status"]
    assert status["phase"] == "Pending"
    assert [a["user"] for a in status["approvals"]] == ["alice"]
    recorded = poll(lambda: len(attempts(operator, uid)) >= 2 and attempts(operator, uid), 10)
    assert [(r["actor"], r["outcome"], r["details"]["counted"]) for r in recorded] == [
        ("alice", "allowed", True),
        ("alice", "allowed", False),
    ]
    assert (
        annotate(kubectl, ns, "apr", "greenlight.dev/decision=approve", as_user="bob").returncode
        == 0
    )
    assert wait_phase(kubectl, ns, "apr", "Approved")["status"]["decision"]["by"] == "bob"


def forged_record(user: str) -> str:
    return json.dumps(
        {
            "user": user,
            "groups": [],
            "action": "approve",
            "reason": "",
            "at": "2026-01-01T00:00:00.000000Z",
            "via": "kubectl",
        }
    )


@pytest.mark.parametrize(
    ("who", "key", "value"),
    [
        ("mallory", "alice-record", "alice"),
        ("mallory", "mallory-record", "mallory"),
        ("alice", "alice-record", "alice"),
        ("orchestrator", "requested-by", "alice"),
        ("mallory", "requested-by", "mallory"),
    ],
)
def test_operator_owned_annotation_cannot_be_forged(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    who: str,
    key: str,
    value: str,
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("apr", ns), people.orchestrator)
    wait_phase(kubectl, ns, "apr", "Pending")
    user = people.orchestrator if who == "orchestrator" else who
    if key == "requested-by":
        annotation = "greenlight.dev/requested-by"
        content = json.dumps({"user": value, "groups": []})
    else:
        annotation = record_key(value)
        content = forged_record(value)

    forged = annotate(kubectl, ns, "apr", f"{annotation}={content}", "--overwrite", as_user=user)

    assert forged.returncode != 0
    assert f"annotation {annotation} is written by Greenlight only" in forged.stderr
    obj = get(kubectl, ns, "apr")
    assert_refusal_audited(operator, obj["metadata"]["uid"], user, "forged_annotation")
    assert obj["status"]["phase"] == "Pending"
    assert obj["status"]["requestedBy"] == people.orchestrator
    assert not [k for k in obj["metadata"]["annotations"] if k.startswith("decisions.")]


def test_decision_record_cannot_be_removed(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(
        kubectl, approval_request("apr", ns, policy={"requiredApprovals": 2}), people.orchestrator
    )
    wait_phase(kubectl, ns, "apr", "Pending")
    assert (
        annotate(kubectl, ns, "apr", "greenlight.dev/decision=approve", as_user="alice").returncode
        == 0
    )

    removed = annotate(kubectl, ns, "apr", f"{record_key('alice')}-", as_user="mallory")

    assert removed.returncode != 0
    assert f"annotation {record_key('alice')} is written by Greenlight only" in removed.stderr


def test_forged_requested_by_at_creation_is_refused(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    manifest = approval_request("apr", people.namespace)
    manifest["metadata"]["annotations"] = {
        "greenlight.dev/requested-by": json.dumps({"user": "alice", "groups": []})
    }

    done = kubectl(
        "create", "-f", "-", input=json.dumps(manifest), as_user=people.orchestrator, check=False
    )

    assert done.returncode != 0
    assert "annotation greenlight.dev/requested-by is written by Greenlight only" in done.stderr


STATUS_PATCH = {
    "status": {
        "phase": "Approved",
        "decision": {"outcome": "Approved", "by": "mallory", "via": "kubectl", "reason": "x"},
    }
}


def test_status_write_is_refused_even_with_rbac_on_the_status_subresource(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    kubectl(
        "-n", ns, "create", "role", "status-editor", "--verb=get,patch,update",
        "--resource=approvalrequests.greenlight.dev/status",
    )  # fmt: skip
    kubectl(
        "-n", ns, "create", "rolebinding", "status-editors", "--role=status-editor",
        "--user=mallory", "--user=alice",
    )  # fmt: skip
    create(kubectl, approval_request("apr", ns), people.orchestrator)
    wait_phase(kubectl, ns, "apr", "Pending")

    uid = get(kubectl, ns, "apr")["metadata"]["uid"]
    for user in ("mallory", "alice"):
        done = kubectl(
            "-n", ns, "patch", "apr/apr", "--subresource=status", "--type=merge",
            "-p", json.dumps(STATUS_PATCH), as_user=user, check=False,
        )  # fmt: skip
        assert done.returncode != 0
        assert (
            "status of an ApprovalRequest is written by Greenlight only; "
            "to decide, use greenlight.dev/decision=approve|deny"
        ) in done.stderr
        assert_refusal_audited(operator, uid, user, "forged_annotation")
    assert get(kubectl, ns, "apr")["status"]["phase"] == "Pending"


def test_status_write_without_rbac_on_the_subresource_is_forbidden_by_rbac(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("apr", ns), people.orchestrator)
    wait_phase(kubectl, ns, "apr", "Pending")

    done = kubectl(
        "-n", ns, "patch", "apr/apr", "--subresource=status", "--type=merge",
        "-p", json.dumps(STATUS_PATCH), as_user="alice", check=False,
    )  # fmt: skip

    assert done.returncode != 0
    assert 'User "alice" cannot' in done.stderr
    assert 'resource "approvalrequests/status"' in done.stderr


def test_status_in_a_patch_of_the_main_resource_is_ignored(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("apr", ns), people.orchestrator)
    wait_phase(kubectl, ns, "apr", "Pending")

    kubectl(
        "-n", ns, "patch", "apr/apr", "--type=merge", "-p", json.dumps(STATUS_PATCH),
        as_user="mallory",
    )  # fmt: skip

    assert get(kubectl, ns, "apr")["status"]["phase"] == "Pending"


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            ["greenlight.dev/decision=yes"],
            "greenlight.dev/decision must be 'approve' or 'deny', not 'yes'",
        ),
        (["greenlight.dev/cancel=please"], "greenlight.dev/cancel must be 'true', not 'please'"),
        (
            ["greenlight.dev/decision=approve", "greenlight.dev/cancel=true"],
            "set either greenlight.dev/decision or greenlight.dev/cancel=true, not both",
        ),
    ],
    ids=["bad-decision", "bad-cancel", "both"],
)
def test_malformed_decision_annotation_is_refused(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    annotations: list[str],
    message: str,
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("apr", ns), people.orchestrator)
    wait_phase(kubectl, ns, "apr", "Pending")

    done = annotate(kubectl, ns, "apr", *annotations, as_user="alice")

    assert done.returncode != 0
    assert WEBHOOK_DENIED + message in done.stderr
    obj = get(kubectl, ns, "apr")
    assert obj["status"]["phase"] == "Pending"
    assert_refusal_audited(operator, obj["metadata"]["uid"], "alice", "invalid_value")
