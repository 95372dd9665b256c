"""The `greenlight` CLI against the real API server, each user with their own client certificate.

`greenlight request --wait` blocks in one process while another person decides in another, and
its exit code tells the orchestrator the outcome: 0 Approved, 2 Denied, 3 Expired (see
test_restart.py), 4 Cancelled, 1 error.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from tests.support.identities import GreenlightCli, cli_for
from tests.support.kubectl import Kubectl
from tests.support.manifests import approval_request, create, get, poll, wait_phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.devcluster import ControlPlane


@pytest.fixture(scope="module")
def cli(control_plane: ControlPlane) -> GreenlightCli:
    return cli_for(control_plane)


def request_args(ns: str, name: str, *extra: str) -> list[str]:
    return [
        "request", "-n", ns, "--name", name, "--action", "pulumi destroy",
        "--target", "production", "--workflow-id", "wf-42", "--task-id", "task-7",
        "--plan-summary", "-12 resources", *extra,
    ]  # fmt: skip


def pending(kubectl: Kubectl, ns: str, name: str) -> bool:
    done = kubectl("-n", ns, "get", f"apr/{name}", "-o", "json", check=False)
    return done.returncode == 0 and json.loads(done.stdout).get("status", {}).get("phase") == (
        "Pending"
    )


# (name, who decides, the decision command, expected exit code, expected outcome line)
OUTCOMES = [
    ("approved", "alice", ["approve", "--reason", "looks right"], 0, "Approved by alice"),
    ("denied", "bob", ["deny", "--reason", "wrong stack"], 2, "Denied by bob via kubectl"),
    ("cancelled", "orchestrator", ["cancel"], 4, "Cancelled by system:serviceaccount:"),
]


def test_request_wait_exits_with_the_outcome_decided_by_another_process(
    operator: OperatorProcess, people: People, kubectl: Kubectl, cli: GreenlightCli
) -> None:
    ns = people.namespace
    waiting: dict[str, subprocess.Popen[str]] = {
        name: cli.start(*request_args(ns, name, "--wait"), as_user=people.orchestrator)
        for name, *_ in OUTCOMES
    }
    for name, *_ in OUTCOMES:
        poll(lambda name=name: pending(kubectl, ns, name), timeout=30)

    for name, who, command, _, _ in OUTCOMES:
        user = people.orchestrator if who == "orchestrator" else who
        decided = cli(command[0], name, "-n", ns, *command[1:], as_user=user)
        assert decided.returncode == 0, decided.stderr
        assert decided.stdout.strip() == f"{command[0]} recorded for {ns}/{name}"

    for name, _, _, code, line in OUTCOMES:
        out, err = waiting[name].communicate(timeout=30)
        assert waiting[name].returncode == code, (out, err)
        assert out.splitlines()[0] == name
        assert line in (out + err)
    approved = get(kubectl, ns, "approved")
    assert approved["status"]["requestedBy"] == people.orchestrator
    assert approved["status"]["decision"]["reason"] == "looks right"
    assert approved["spec"]["requester"] == {"workflowId": "wf-42", "taskId": "task-7"}


def test_wait_on_a_decided_request_returns_at_once(
    operator: OperatorProcess, people: People, kubectl: Kubectl, cli: GreenlightCli
) -> None:
    ns = people.namespace
    created = cli(*request_args(ns, "r"), as_user=people.orchestrator)
    assert created.returncode == 0, created.stderr
    wait_phase(kubectl, ns, "r", "Pending")
    assert cli("deny", "r", "-n", ns, "--reason", "no", as_user="alice").returncode == 0
    wait_phase(kubectl, ns, "r", "Denied")

    waited = cli("wait", "r", "-n", ns, as_user=people.orchestrator)

    assert waited.returncode == 2
    assert waited.stderr.strip() == "r: Denied by alice via kubectl (no)"


@pytest.mark.parametrize(
    ("args", "who", "message"),
    [
        (["wait", "nope"], "orchestrator", "cannot read {ns}/nope"),
        (["get", "nope"], "alice", "cannot read {ns}/nope"),
        (["approve", "nope"], "alice", 'approvalrequests.greenlight.dev "nope" not found'),
        (
            ["approve", "r"],
            "mallory",
            "user 'mallory' may not approve approvalrequests.greenlight.dev in namespace '{ns}'",
        ),
        (
            ["approve", "r"],
            "orchestrator",
            "user 'system:serviceaccount:{ns}:orchestrator' may not approve",
        ),
        (["cancel", "r"], "mallory", "user 'mallory' may not cancel {ns}/r"),
        (["wait", "r", "--timeout", "1"], "orchestrator", "{ns}/r is still Pending after 1.0s"),
        (["list"], "carol-elsewhere", "cannot list requests"),
        (["deny", "r"], "alice", "the following arguments are required: --reason"),
        (["approve"], "alice", "the following arguments are required: name"),
        (
            ["request", "--action", "a", "--target", "t", "--workflow-id", "w", "--approvals", "0"],
            "orchestrator",
            "spec.policy.requiredApprovals",
        ),
        (
            ["request", "--action", "a", "--target", "t", "--workflow-id", "w b"],
            "orchestrator",
            "spec.requester.workflowId",
        ),
        (
            ["request", "--action", "a", "--target", "t", "--workflow-id", "w"],
            "mallory",
            'User "mallory" cannot create resource',
        ),
    ],
    ids=[
        "wait-unknown",
        "get-unknown",
        "approve-unknown",
        "refused-not-authorized",
        "refused-requester",
        "refused-cancel",
        "wait-timeout",
        "list-forbidden",
        "deny-without-reason",
        "missing-name",
        "invalid-approvals",
        "invalid-workflow-id",
        "create-forbidden",
    ],
)
def test_errors_exit_1_with_the_reason(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    cli: GreenlightCli,
    args: list[str],
    who: str,
    message: str,
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("r", ns), people.orchestrator)
    wait_phase(kubectl, ns, "r", "Pending")
    user = people.orchestrator if who == "orchestrator" else who

    done = cli(*args, "-n", ns, as_user=user)

    assert done.returncode == 1, (done.stdout, done.stderr)
    assert message.format(ns=ns) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert get(kubectl, ns, "r")["status"]["phase"] == "Pending"


def test_get_and_list_show_the_request(
    operator: OperatorProcess, people: People, kubectl: Kubectl, cli: GreenlightCli
) -> None:
    ns = people.namespace
    for name in ("alpha", "beta"):
        created = cli(*request_args(ns, name, "--timeout", "2h"), as_user=people.orchestrator)
        assert created.stdout.strip() == name
    generated = cli(
        "request", "-n", ns, "--action", "merge", "--target", "main",
        "--workflow-id", "CI/Build:7", as_user=people.orchestrator,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    generated_name = generated.stdout.strip()
    assert generated_name.startswith("ci-build-7-")
    for name in ("alpha", "beta", generated_name):
        wait_phase(kubectl, ns, name, "Pending")

    as_yaml = yaml.safe_load(cli("get", "alpha", "-n", ns, as_user="alice").stdout)
    as_json = json.loads(cli("get", "alpha", "-n", ns, "-o", "json", as_user="alice").stdout)
    listing = cli("list", "-n", ns, as_user="alice").stdout.splitlines()

    assert as_yaml == as_json
    assert as_json["status"]["phase"] == "Pending"
    assert as_json["spec"]["timeout"] == "2h"
    assert "managedFields" not in as_json["metadata"]
    assert listing[0].split() == ["NAME", "PHASE", "ACTION", "TARGET", "WORKFLOW", "EXPIRES"]
    rows = {line.split()[0]: line for line in listing[1:]}
    assert sorted(rows) == sorted(["alpha", "beta", generated_name])
    expires = as_json["status"]["expiresAt"]
    assert rows["alpha"].split() == [
        "alpha",
        "Pending",
        "pulumi",
        "destroy",
        "production",
        "wf-42",
        expires,
    ]
    assert rows[generated_name].split()[1:5] == ["Pending", "merge", "main", "CI/Build:7"]


def test_request_reads_the_plan_from_stdin_and_records_its_digest(
    operator: OperatorProcess, people: People, kubectl: Kubectl, cli: GreenlightCli
) -> None:
    import hashlib

    ns = people.namespace
    plan = "Plan: 0 to add, 0 to change, 12 to destroy.\n"

    created = cli(
        *request_args(ns, "p", "--plan-file", "-"), as_user=people.orchestrator, input=plan
    )

    assert created.returncode == 0, created.stderr
    obj = wait_phase(kubectl, ns, "p", "Pending")
    assert obj["spec"]["plan"] == {"format": "text", "summary": "-12 resources", "details": plan}
    assert obj["status"]["planDigest"] == "sha256:" + hashlib.sha256(plan.encode()).hexdigest()
