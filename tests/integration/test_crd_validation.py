"""Bad ApprovalRequests are refused by the API server itself, with a message naming the field.

Every case goes through real `kubectl create` against the real kube-apiserver with the CRD from
`crds/`: the structural schema, its bounds and patterns, and the CEL rules do the refusing.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from tests.support.kubectl import Kubectl
from tests.support.manifests import approval_request, create, get, wait_phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.core.timefmt import parse_time

REQUESTER = {"workflowId": "wf-1234"}
TOO_LONG_DETAILS = "x" * (262144 + 1)

# (case id, spec fields to replace (None removes), the field path kubectl must name, the message)
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing-action", {"action": None}, "spec.action", "Required value"),
    ("missing-target", {"target": None}, "spec.target", "Required value"),
    ("missing-requester", {"requester": None}, "spec.requester", "Required value"),
    (
        "missing-workflow-id",
        {"requester": {"taskId": "t-1"}},
        "spec.requester.workflowId",
        "Required value",
    ),
    ("empty-action", {"action": ""}, "spec.action", "should be at least 1 chars long"),
    ("empty-target", {"target": ""}, "spec.target", "should be at least 1 chars long"),
    (
        "empty-workflow-id",
        {"requester": {"workflowId": ""}},
        "spec.requester.workflowId",
        "should be at least 1 chars long",
    ),
    ("action-too-long", {"action": "a" * 257}, "spec.action", "Too long"),
    ("target-too-long", {"target": "t" * 257}, "spec.target", "Too long"),
    (
        "plan-details-too-long",
        {"plan": {"summary": "s", "details": TOO_LONG_DETAILS}},
        "spec.plan.details",
        "Too long",
    ),
    (
        "plan-summary-too-long",
        {"plan": {"summary": "s" * 1025}},
        "spec.plan.summary",
        "Too long",
    ),
    (
        "on-behalf-of-too-long",
        {"requester": {**REQUESTER, "onBehalfOf": "u" * 254}},
        "spec.requester.onBehalfOf",
        "Too long",
    ),
    (
        "on-behalf-of-cyrillic-lookalike",
        {"requester": {**REQUESTER, "onBehalfOf": "\N{CYRILLIC SMALL LETTER A}lice"}},
        "spec.requester.onBehalfOf",
        "onBehalfOf must be a person's user name",
    ),
    (
        "on-behalf-of-zero-width",
        {"requester": {**REQUESTER, "onBehalfOf": "ali\u200bce"}},
        "spec.requester.onBehalfOf",
        "no control or invisible characters",
    ),
    (
        "on-behalf-of-whitespace-only",
        {"requester": {**REQUESTER, "onBehalfOf": " \u3000 "}},
        "spec.requester.onBehalfOf",
        "not only whitespace",
    ),
    (
        "workflow-id-with-space",
        {"requester": {"workflowId": "wf 1"}},
        "spec.requester.workflowId",
        "should match",
    ),
    (
        "workflow-id-leading-dash",
        {"requester": {"workflowId": "-wf"}},
        "spec.requester.workflowId",
        "should match",
    ),
    (
        "task-id-bad-pattern",
        {"requester": {**REQUESTER, "taskId": "task 9!"}},
        "spec.requester.taskId",
        "should match",
    ),
    *(
        (f"action-{case}", {"action": action}, "spec.action", "action must be printable text")
        for case, action in (
            ("zero-width", "terraform\u200bdestroy"),
            ("no-break-space", "terraform\u00a0destroy"),
            ("doubled-space", "terraform  destroy"),
            ("leading-space", " terraform destroy"),
            ("newline", "terraform destroy\n*Target*: staging"),
        )
    ),
    ("target-tab", {"target": "prod\tuction"}, "spec.target", "target must be printable text"),
    ("timeout-0s", {"timeout": "0s"}, "spec.timeout", "timeout must be between 1m and 7d"),
    ("timeout-30s", {"timeout": "30s"}, "spec.timeout", "timeout must be between 1m and 7d"),
    ("timeout-8d", {"timeout": "8d"}, "spec.timeout", "timeout must be between 1m and 7d"),
    ("timeout-169h", {"timeout": "169h"}, "spec.timeout", "timeout must be between 1m and 7d"),
    ("timeout-abc", {"timeout": "abc"}, "spec.timeout", "should match"),
    ("timeout-empty", {"timeout": ""}, "spec.timeout", "timeout must not be empty"),
    ("timeout-number", {"timeout": 30}, "spec.timeout", "must be of type string"),
    (
        "required-approvals-0",
        {"policy": {"requiredApprovals": 0}},
        "spec.policy.requiredApprovals",
        "should be greater than or equal to 1",
    ),
    (
        "required-approvals-11",
        {"policy": {"requiredApprovals": 11}},
        "spec.policy.requiredApprovals",
        "should be less than or equal to 10",
    ),
    (
        "required-approvals-string",
        {"policy": {"requiredApprovals": "two"}},
        "spec.policy.requiredApprovals",
        "must be of type integer",
    ),
    (
        "fewer-approver-users-than-required",
        {"policy": {"requiredApprovals": 3, "approvers": {"users": ["alice", "bob"]}}},
        "spec.policy",
        "policy.requiredApprovals is larger than the number of policy.approvers.users",
    ),
    (
        "duplicate-approver-user",
        {"policy": {"approvers": {"users": ["alice", "alice"]}}},
        "spec.policy.approvers.users[1]",
        "Duplicate value",
    ),
    (
        "empty-approver-user",
        {"policy": {"approvers": {"users": [""]}}},
        "spec.policy.approvers.users[0]",
        "should be at least 1 chars long",
    ),
    (
        "slack-channel-with-space",
        {"notify": {"slack": {"channel": "C0 123"}}},
        "spec.notify.slack.channel",
        "should match",
    ),
    (
        "slack-channel-too-long",
        {"notify": {"slack": {"channel": "C" * 81}}},
        "spec.notify.slack.channel",
        "Too long",
    ),
    ("unknown-spec-field", {"actoin": "x"}, "spec.actoin", 'unknown field "spec.actoin"'),
]


@pytest.mark.parametrize(
    ("spec", "field", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_request_is_refused_naming_the_field(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    spec: dict[str, Any],
    field: str,
    message: str,
) -> None:
    manifest = approval_request("bad", people.namespace, **spec)

    done = kubectl(
        "create", "-f", "-", input=json.dumps(manifest), as_user=people.orchestrator, check=False
    )

    assert done.returncode != 0
    assert field in done.stderr, done.stderr
    assert message in done.stderr, done.stderr
    assert kubectl("-n", people.namespace, "get", "apr/bad", check=False).returncode != 0


def test_an_action_in_any_script_with_single_spaces_is_accepted(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    manifest = approval_request("ok", people.namespace, action="déployer l'app", target="prod-ü")
    create(kubectl, manifest, people.orchestrator)

    assert get(kubectl, people.namespace, "ok")["spec"]["action"] == "déployer l'app"


@pytest.mark.parametrize("timeout", ["1m", "90s", "1h30m", "7d", "168h"])
def test_timeout_at_and_inside_the_bounds_is_accepted(
    operator: OperatorProcess, people: People, kubectl: Kubectl, timeout: str
) -> None:
    create(kubectl, approval_request("ok", people.namespace, timeout=timeout), people.orchestrator)

    assert get(kubectl, people.namespace, "ok")["spec"]["timeout"] == timeout


def test_plan_details_at_the_size_limit_is_accepted(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    plan = {"summary": "big", "details": "x" * 262144}

    create(kubectl, approval_request("big", people.namespace, plan=plan), people.orchestrator)

    obj = wait_phase(kubectl, people.namespace, "big", "Pending")
    assert obj["status"]["planDigest"].startswith("sha256:")


def test_without_a_timeout_the_request_waits_an_hour_and_needs_one_approval(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    create(kubectl, approval_request("plain", people.namespace, timeout=None), people.orchestrator)

    obj = wait_phase(kubectl, people.namespace, "plain", "Pending")
    assert "timeout" not in obj["spec"]  # left to the policies' defaultTimeout, else 1h
    assert obj["spec"]["policy"] == {"requiredApprovals": 1}
    created = parse_time(obj["metadata"]["creationTimestamp"])
    assert parse_time(obj["status"]["expiresAt"]) - created == timedelta(hours=1)


@pytest.mark.parametrize(
    "change",
    [
        {"spec": {"target": "staging"}},
        {"spec": {"policy": {"requiredApprovals": 1, "approvers": {"users": ["mallory"]}}}},
        {"spec": {"timeout": "7d"}},
    ],
    ids=["target", "approvers", "timeout"],
)
def test_spec_change_after_creation_is_refused_as_immutable(
    operator: OperatorProcess, people: People, kubectl: Kubectl, change: dict[str, Any]
) -> None:
    create(kubectl, approval_request("fixed", people.namespace), people.orchestrator)

    done = kubectl(
        "-n",
        people.namespace,
        "patch",
        "apr/fixed",
        "--type=merge",
        "-p",
        json.dumps(change),
        as_user=people.orchestrator,
        check=False,
    )

    assert done.returncode != 0
    assert "spec: Invalid value" in done.stderr, done.stderr
    assert "spec is immutable; create a new ApprovalRequest instead" in done.stderr
    assert get(kubectl, people.namespace, "fixed")["spec"]["target"] == "production"


@pytest.mark.parametrize(
    "annotation", ["greenlight.dev/decision", "greenlight.dev/reason", "greenlight.dev/cancel"]
)
def test_decision_at_creation_is_refused_by_the_webhook(
    operator: OperatorProcess, people: People, kubectl: Kubectl, annotation: str
) -> None:
    manifest = approval_request("early", people.namespace)
    manifest["metadata"]["annotations"] = {annotation: "approve"}

    done = kubectl(
        "create", "-f", "-", input=json.dumps(manifest), as_user=people.orchestrator, check=False
    )

    assert done.returncode != 0
    assert f"{annotation} cannot be set when the request is created; decide it afterwards" in (
        done.stderr
    )


@pytest.mark.parametrize(
    "status",
    [
        {
            "phase": "Approved",
            "decision": {"outcome": "Approved", "by": "alice", "via": "kubectl"},
        },
        {"phase": "Bogus", "approvals": [{"user": "alice", "via": "carrier-pigeon"}]},
    ],
    ids=["pre-approved", "unknown-enum"],
)
def test_status_in_a_created_manifest_is_ignored(
    operator: OperatorProcess, people: People, kubectl: Kubectl, status: dict[str, Any]
) -> None:
    """A status subresource drops `status` on create: nobody creates a request pre-approved,
    and an unknown enum value there is irrelevant rather than an error."""
    manifest = approval_request("preset", people.namespace)
    manifest["status"] = status

    create(kubectl, manifest, people.orchestrator)

    obj = wait_phase(kubectl, people.namespace, "preset", "Pending")
    assert "decision" not in obj["status"]
    assert obj["status"]["approvals"] == []
    assert obj["status"]["requestedBy"] == people.orchestrator


def test_status_with_an_unknown_phase_is_refused_even_for_the_operator(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    """The admin kubeconfig is the operator's own identity: only the schema stands in its way."""
    create(kubectl, approval_request("phase", people.namespace), people.orchestrator)
    wait_phase(kubectl, people.namespace, "phase", "Pending")

    done = kubectl(
        "-n",
        people.namespace,
        "patch",
        "apr/phase",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Approvedish"}}),
        check=False,
    )

    assert done.returncode != 0
    assert "status.phase: Unsupported value" in done.stderr, done.stderr
