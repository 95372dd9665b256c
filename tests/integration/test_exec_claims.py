"""Used once: `greenlight exec` verifies the receipt, claims it on the real API server (a
compare-and-swap the admission webhook checks), runs the command, and the operator records the
execution in `status.execution` and the audit log. Second claims, other identities, other plans
and concurrent claims are refused; a runner killed mid-command leaves a visible, alerted claim."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.support.identities import GreenlightCli, cli_for
from tests.support.kubectl import Kubectl
from tests.support.manifests import annotate, approval_request, create, get, poll, wait_phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.client import ApprovalClient, ExecutionRefused, GreenlightError
from greenlight.core.model import ANN_CLAIM, Phase
from greenlight.core.stamps import plan_digest
from greenlight.devcluster import ControlPlane
from greenlight.kube import load_client_config

PLAN = "- aws:s3:Bucket logs\n"
RACES = 8


@pytest.fixture
def cli(control_plane: ControlPlane) -> GreenlightCli:
    return cli_for(control_plane)


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.txt"
    path.write_text(PLAN)
    return path


def approved(kubectl: Kubectl, people: People, name: str) -> dict[str, Any]:
    ns = people.namespace
    create(kubectl, approval_request(name, ns), people.orchestrator)
    wait_phase(kubectl, ns, name, "Pending")
    done = annotate(kubectl, ns, name, "greenlight.dev/decision=approve", as_user=people.alice)
    assert done.returncode == 0, done.stderr
    return wait_phase(kubectl, ns, name, "Approved")


def exec_argv(ns: str, name: str, plan: Path, keys: Path, *command: str) -> list[str]:
    return [
        "exec",
        "-n",
        ns,
        "--request",
        name,
        "--plan-file",
        str(plan),
        "--keys",
        str(keys),
        "--",
        *command,
    ]


def execution_of(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any] | None:
    execution: dict[str, Any] | None = (get(kubectl, ns, name).get("status") or {}).get("execution")
    return execution


def finished_execution(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    """`status.execution` once it shows the finish (fails after 20 s)."""
    done: dict[str, Any] = poll(
        lambda: (e := execution_of(kubectl, ns, name)) and "finishedAt" in e and e, 20
    )
    return done


def records_of(operator: OperatorProcess, uid: str) -> list[dict[str, Any]]:
    return [r for r in operator.audit_records() if (r.get("request") or {}).get("uid") == uid]


def test_exec_runs_once_and_the_execution_is_on_record(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    cli: GreenlightCli,
    keys_file: Path,
    plan_file: Path,
    tmp_path: Path,
) -> None:
    ns = people.namespace
    obj = approved(kubectl, people, "once")
    marker = tmp_path / "ran"
    command = ("sh", "-c", f'echo "the action ran"; echo x >> {marker}; exit 3')

    done = cli(*exec_argv(ns, "once", plan_file, keys_file, *command), as_user=people.orchestrator)

    assert done.returncode == 3, done.stderr
    assert "the action ran" in done.stdout
    assert f"{ns}/once claimed by {people.orchestrator}" in done.stderr
    execution = finished_execution(kubectl, ns, "once")
    assert execution["claimedBy"] == people.orchestrator
    assert execution["exitCode"] == 3
    assert execution["durationSeconds"] >= 0
    assert get(kubectl, ns, "once")["status"]["phase"] == "Approved"

    again = cli(*exec_argv(ns, "once", plan_file, keys_file, *command), as_user=people.orchestrator)
    assert again.returncode == 125
    assert f"already claimed by {people.orchestrator}" in again.stderr
    assert marker.read_text() == "x\n"  # the command ran exactly once

    events = [r["event"] for r in records_of(operator, obj["metadata"]["uid"])]
    story = [
        e for e in events if e in ("requested", "decided", "receipt_issued", "claimed", "finished")
    ]
    assert story == ["requested", "decided", "receipt_issued", "claimed", "finished"]
    finished = [r for r in records_of(operator, obj["metadata"]["uid"]) if r["event"] == "finished"]
    assert finished[0]["outcome"] == "failure"
    assert finished[0]["details"]["exitCode"] == 3

    shown = cli("audit", "show", "once", "-n", ns, "--file", str(operator.audit_file))
    assert shown.returncode == 0, shown.stderr
    lines = [line.split()[1] for line in shown.stdout.splitlines()[1:]]
    assert [e for e in lines if e in ("requested", "decided", "claimed", "finished")] == [
        "requested",
        "decided",
        "claimed",
        "finished",
    ]
    assert "exitCode=3" in shown.stdout


def test_only_the_requester_claims_and_a_refusal_is_audited(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    cli: GreenlightCli,
    keys_file: Path,
    plan_file: Path,
    tmp_path: Path,
) -> None:
    ns = people.namespace
    obj = approved(kubectl, people, "theirs")
    marker = tmp_path / "ran"

    for user in (people.alice, people.mallory):
        done = cli(
            *exec_argv(ns, "theirs", plan_file, keys_file, "touch", str(marker)), as_user=user
        )
        assert done.returncode == 125, done.stderr
        assert f"only the requester ({people.orchestrator}) may claim" in done.stderr
    assert not marker.exists()
    assert execution_of(kubectl, ns, "theirs") is None
    refused = poll(
        lambda: [
            r
            for r in records_of(operator, obj["metadata"]["uid"])
            if r["event"] == "claim_attempted"
        ],
        10,
    )
    assert {r["actor"] for r in refused} >= {people.alice}
    assert {r["reason"] for r in refused} == {"not_requester"}


def test_a_changed_plan_or_another_target_claims_nothing(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    cli: GreenlightCli,
    keys_file: Path,
    tmp_path: Path,
) -> None:
    ns = people.namespace
    approved(kubectl, people, "exact")
    changed = tmp_path / "changed.txt"
    changed.write_text(PLAN.replace("logs", "logz"))
    good = tmp_path / "plan.txt"
    good.write_text(PLAN)

    by_plan = cli(*exec_argv(ns, "exact", changed, keys_file, "true"), as_user=people.orchestrator)
    argv = exec_argv(ns, "exact", good, keys_file, "true")
    by_target = cli(*argv[:-2], "--target", "staging", "--", "true", as_user=people.orchestrator)

    assert by_plan.returncode == 125
    assert "PLAN MISMATCH" in by_plan.stderr
    assert by_target.returncode == 125
    assert "ACTION MISMATCH" in by_target.stderr
    assert execution_of(kubectl, ns, "exact") is None
    # A claim annotation naming another plan, written directly, is refused by the webhook.
    direct = annotate(
        kubectl, ns, "exact", f"{ANN_CLAIM}={plan_digest(PLAN + 'x')}", as_user=people.orchestrator
    )
    assert direct.returncode != 0
    assert "the plan verified has digest" in direct.stderr


def race(kubectl: Kubectl, people: People, kubeconfig: str, keys: str, name: str) -> list[str]:
    """Claim `name` twice at once: through the SDK (a compare-and-swap on the resourceVersion)
    and as a bare annotation (the webhook's own check); each result is "won" or why not."""
    ns = people.namespace
    barrier = threading.Barrier(2)
    results: list[str] = []

    def by_sdk() -> None:
        client = ApprovalClient(ns, api_client=load_client_config(kubeconfig))
        barrier.wait()
        try:
            client.claim(name, PLAN.encode(), keys=keys)
            results.append("won")
        except ExecutionRefused as exc:
            results.append(f"refused: {exc}")

    def by_annotation() -> None:
        barrier.wait()
        done = annotate(
            kubectl, ns, name, f"{ANN_CLAIM}={plan_digest(PLAN)}", as_user=people.orchestrator
        )
        results.append("won" if done.returncode == 0 else f"refused: {done.stderr}")

    threads = [threading.Thread(target=by_sdk), threading.Thread(target=by_annotation)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_concurrent_claims_exactly_one_wins(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    cli: GreenlightCli,
    keys_file: Path,
) -> None:
    """Two claimers per request, released together, RACES times: exactly one wins each."""
    kubeconfig = str(cli.kubeconfig(people.orchestrator))
    wins: list[int] = []
    for round_ in range(RACES):
        name = f"race-{round_}"
        approved(kubectl, people, name)
        results = race(kubectl, people, kubeconfig, keys_file.read_text(), name)
        assert len(results) == 2, results
        wins.append(results.count("won"))
        assert next(r for r in results if r != "won").count("already claimed") == 1, results
        execution = poll(lambda n=name: execution_of(kubectl, people.namespace, n), 20)
        assert execution["claimedBy"] == people.orchestrator
    assert wins == [1] * RACES


def test_a_runner_killed_mid_command_leaves_a_visible_alerted_claim(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    cli: GreenlightCli,
    keys_file: Path,
    plan_file: Path,
) -> None:
    ns = people.namespace
    approved(kubectl, people, "killed")
    runner = cli.start(
        *exec_argv(ns, "killed", plan_file, keys_file, "sleep", "120"), as_user=people.orchestrator
    )
    children: list[str] = []
    try:
        poll(lambda: execution_of(kubectl, ns, "killed"), 30)
        children = subprocess.run(
            ["pgrep", "-P", str(runner.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        runner.kill()  # kill -9: no finish is ever reported
        runner.wait(10)
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        if runner.poll() is None:
            runner.kill()

    execution = execution_of(kubectl, ns, "killed")
    assert execution is not None
    assert "finishedAt" not in execution
    unfinished = poll(lambda: operator.metric("greenlight_executions_unfinished") >= 1 or None, 15)
    assert unfinished
    assert operator.metric("greenlight_oldest_unfinished_execution_age_seconds") > 0
    again = cli(*exec_argv(ns, "killed", plan_file, keys_file, "true"), as_user=people.orchestrator)
    assert again.returncode == 125
    assert "(not finished)" in again.stderr  # never a silent retry

    # Someone else cannot close it; the claimer can, after looking.
    other = annotate(kubectl, ns, "killed", "greenlight.dev/finish=unknown", as_user=people.alice)
    assert other.returncode != 0
    assert "only they report how it ended" in other.stderr
    closed = annotate(
        kubectl, ns, "killed", "greenlight.dev/finish=unknown", as_user=people.orchestrator
    )
    assert closed.returncode == 0, closed.stderr
    done = finished_execution(kubectl, ns, "killed")
    assert done["exitCode"] == "unknown"


def test_the_sdk_context_manager_reports_how_the_block_ended(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    cli: GreenlightCli,
    keys_file: Path,
) -> None:
    ns = people.namespace
    client = ApprovalClient(
        ns, api_client=load_client_config(str(cli.kubeconfig(people.orchestrator)))
    )
    keys = keys_file.read_text()
    for name in ("sdk-ok", "sdk-raises", "sdk-code"):
        approved(kubectl, people, name)

    with client.execution("sdk-ok", PLAN.encode(), keys=keys) as run:
        assert run.claimed_by == people.orchestrator
    with (
        pytest.raises(RuntimeError, match="boom"),
        client.execution("sdk-raises", PLAN.encode(), keys=keys),
    ):
        raise RuntimeError("boom")
    with client.execution("sdk-code", PLAN.encode(), keys=keys) as run:
        run.exit_code = 7
    with (
        pytest.raises(ExecutionRefused, match="already claimed"),
        client.execution("sdk-ok", PLAN.encode(), keys=keys),
    ):
        pytest.fail("a second claim must not run the block")

    for name, code in (("sdk-ok", 0), ("sdk-raises", 1), ("sdk-code", 7)):
        execution = finished_execution(kubectl, ns, name)
        assert execution["exitCode"] == code, name


def test_the_sdk_never_takes_the_outcome_of_a_request_created_again_under_its_name(
    operator: OperatorProcess, people: People, kubectl: Kubectl, cli: GreenlightCli
) -> None:
    ns = people.namespace
    client = ApprovalClient(
        ns, api_client=load_client_config(str(cli.kubeconfig(people.orchestrator)))
    )
    name = client.create(
        action="pulumi destroy", target="production", workflow_id="wf-1", name="twice"
    )
    wait_phase(kubectl, ns, name, "Pending")
    kubectl("-n", ns, "delete", f"apr/{name}")
    approved(kubectl, people, name)  # another object under the same name, Approved

    with pytest.raises(GreenlightError, match="deleted and created again"):
        client.wait(name, timeout=10)
    with pytest.raises(GreenlightError, match="deleted and created again"):
        client.claim(name, PLAN.encode(), keys={})
    other = ApprovalClient(ns, api_client=client.api_client)  # did not create it: follows it
    assert other.wait(name, timeout=10).phase is Phase.APPROVED
