"""The gate under attack, against the real API server and the operator process: forged
admission reviews, planted marks, leftover reasons, writes the API server refused, huge plans,
corrupted bookkeeping, and deletes."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from tests.support.identities import GreenlightCli, cli_for
from tests.support.kubectl import Kubectl
from tests.support.manifests import annotate, approval_request, create, get, poll, wait_phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.core.model import Action, Via
from greenlight.core.stamps import DecisionRecord, derive_key, record_key
from greenlight.core.timefmt import now
from greenlight.devcluster import ControlPlane


def review(obj: dict[str, Any], user: str) -> bytes:
    """An AdmissionReview as a forger would write it: alice approves `obj`."""
    new = json.loads(json.dumps(obj))
    new["metadata"].setdefault("annotations", {})["greenlight.dev/decision"] = "approve"
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "forged-1",
                "kind": {
                    "group": "greenlight.dev",
                    "version": "v1alpha1",
                    "kind": "ApprovalRequest",
                },
                "resource": {
                    "group": "greenlight.dev",
                    "version": "v1alpha1",
                    "resource": "approvalrequests",
                },
                "operation": "UPDATE",
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": new,
                "oldObject": obj,
                "dryRun": False,
            },
        }
    ).encode()


def post(operator: OperatorProcess, body: bytes, context: ssl.SSLContext) -> tuple[int | None, str]:
    request = urllib.request.Request(
        f"https://127.0.0.1:{operator.webhook_port}/greenlight-admission-mutate",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, ssl.SSLError, ConnectionError) as exc:
        return None, str(exc)


def unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_forged_admission_reviews_are_turned_away_before_they_are_read(
    operator: OperatorProcess, people: People, kubectl: Kubectl, control_plane: ControlPlane
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("target", ns), people.orchestrator)
    obj = wait_phase(kubectl, ns, "target", "Pending")
    size = operator.audit_file.stat().st_size
    body = review(obj, "alice")

    anonymous = post(operator, body, unverified_context())
    pki = control_plane._require_pki()
    wrong_name = unverified_context()
    wrong_name.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))  # same CA, other name
    impostor = post(operator, body, wrong_name)

    assert anonymous[0] is None or anonymous[0] >= 400, anonymous
    assert impostor[0] == 403, impostor
    time.sleep(0.5)
    assert operator.audit_file.stat().st_size == size
    assert get(kubectl, ns, "target")["status"]["phase"] == "Pending"


def test_the_api_server_still_reaches_the_webhook_with_its_client_certificate(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("reached", ns), people.orchestrator)
    wait_phase(kubectl, ns, "reached", "Pending")

    done = annotate(kubectl, ns, "reached", "greenlight.dev/decision=approve", as_user="alice")

    assert done.returncode == 0, done.stderr
    wait_phase(kubectl, ns, "reached", "Approved")


def test_planted_marks_are_refused_by_the_webhook(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("planted", ns), people.orchestrator)
    wait_phase(kubectl, ns, "planted", "Pending")
    record = DecisionRecord("alice", Action.APPROVE, now(), Via.KUBECTL, "planted")

    refused = annotate(
        kubectl,
        ns,
        "planted",
        f"{record_key('alice')}={record.to_annotation()}",
        as_user="root",
        as_groups=("system:masters",),
    )

    assert refused.returncode != 0
    assert "is written by Greenlight only" in refused.stderr
    assert get(kubectl, ns, "planted")["status"]["phase"] == "Pending"


def without_webhooks(control_plane: ControlPlane) -> None:
    from kubernetes import client

    api = control_plane.api_client()
    try:
        admission = client.AdmissionregistrationV1Api(api)
        admission.delete_mutating_webhook_configuration("greenlight.dev")
        admission.delete_validating_webhook_configuration("greenlight.dev")
    finally:
        api.close()


@pytest.fixture
def cli(control_plane: ControlPlane) -> GreenlightCli:
    return cli_for(control_plane)


def test_what_was_written_while_no_webhook_covered_it_is_never_decided_on(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    control_plane: ControlPlane,
    cli: GreenlightCli,
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("covered", ns), people.orchestrator)
    covered = wait_phase(kubectl, ns, "covered", "Pending")
    without_webhooks(control_plane)
    try:
        record = DecisionRecord("alice", Action.APPROVE, now(), Via.KUBECTL, "planted")
        annotate(kubectl, ns, "covered", f"{record_key('alice')}={record.to_annotation()}")
        create(kubectl, approval_request("unstamped", ns), people.orchestrator)
        unstamped = wait_phase(kubectl, ns, "unstamped", "Pending")
    finally:
        operator.restart()

    time.sleep(1)
    assert get(kubectl, ns, "covered")["status"]["phase"] == "Pending"
    assert get(kubectl, ns, "covered")["status"]["approvals"] == []
    conditions = {c["type"]: c for c in unstamped["status"]["conditions"]}
    assert conditions["Verified"]["status"] == "False"
    assert unstamped["status"]["requestedBy"] == ""
    self_approval = annotate(
        kubectl, ns, "unstamped", "greenlight.dev/decision=approve", as_user="alice"
    )
    assert self_approval.returncode != 0
    assert "was not stamped by Greenlight" in self_approval.stderr
    assert get(kubectl, ns, "unstamped")["status"]["phase"] == "Pending"
    untrusted = [
        r
        for r in operator.audit_records()
        if r["event"] == "decision_attempted"
        and r["reason"] == "untrusted_record"
        and r["request"]["uid"] == covered["metadata"]["uid"]
    ]
    assert len(untrusted) == 1
    resubmitted = cli("resubmit", "unstamped", "-n", ns, as_user=people.orchestrator)
    assert resubmitted.returncode == 0, resubmitted.stderr
    fresh = wait_phase(kubectl, ns, resubmitted.stdout.strip(), "Pending")
    assert fresh["status"]["requestedBy"] == people.orchestrator
    assert "Verified" not in {c["type"] for c in fresh["status"]["conditions"]}


def test_a_leftover_reason_is_not_the_deciders_reason(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("leftover", ns), people.orchestrator)
    wait_phase(kubectl, ns, "leftover", "Pending")

    alone = annotate(kubectl, ns, "leftover", "greenlight.dev/reason=bob says no", as_user="bob")
    deny = annotate(kubectl, ns, "leftover", "greenlight.dev/decision=deny", as_user="alice")
    invisible = annotate(
        kubectl,
        ns,
        "leftover",
        "greenlight.dev/decision=deny",
        "greenlight.dev/reason=\u200b",
        as_user="alice",
    )

    assert alone.returncode != 0
    assert "is read only together with greenlight.dev/decision" in alone.stderr
    assert deny.returncode != 0
    assert "a deny needs a reason" in deny.stderr
    assert invisible.returncode != 0
    assert "a deny needs a reason" in invisible.stderr
    assert get(kubectl, ns, "leftover")["status"]["phase"] == "Pending"


def test_approval_sent_with_a_stale_resource_version_is_never_audited_as_allowed(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("stale", ns), people.orchestrator)
    obj = wait_phase(kubectl, ns, "stale", "Pending")
    stale = json.loads(json.dumps(obj))
    stale["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) - 1)
    stale["metadata"]["annotations"]["greenlight.dev/decision"] = "approve"
    stale.pop("status")

    replaced = kubectl("replace", "-f", "-", input=json.dumps(stale), as_user="alice", check=False)

    assert replaced.returncode != 0
    time.sleep(1)
    uid = obj["metadata"]["uid"]
    allowed = [
        r
        for r in operator.audit_records()
        if r["event"] == "decision_attempted"
        and r["outcome"] == "allowed"
        and (r.get("request") or {}).get("uid") == uid
    ]
    assert allowed == []
    assert get(kubectl, ns, "stale")["status"]["phase"] == "Pending"


@pytest.mark.parametrize("char", ["─", "a"])
def test_a_plan_near_the_size_limit_stays_decidable(
    operator: OperatorProcess, people: People, kubectl: Kubectl, char: str
) -> None:
    ns = people.namespace
    details = char * 180_000
    create(
        kubectl,
        approval_request(f"big-{ord(char)}", ns, plan={"summary": "big", "details": details}),
        people.orchestrator,
    )
    wait_phase(kubectl, ns, f"big-{ord(char)}", "Pending")

    done = annotate(
        kubectl, ns, f"big-{ord(char)}", "greenlight.dev/decision=approve", as_user="alice"
    )

    assert done.returncode == 0, done.stderr
    wait_phase(kubectl, ns, f"big-{ord(char)}", "Approved")
    records = [
        r
        for r in operator.audit_records()
        if (r.get("request") or {}).get("name") == f"big-{ord(char)}"
    ]
    plans = [r for r in records if "spec" in (r.get("details") or {})]
    assert [r["event"] for r in plans] == ["requested"]  # the plan is on record once


def test_corrupted_kopf_annotations_change_nothing(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("kopfed", ns), people.orchestrator)
    wait_phase(kubectl, ns, "kopfed", "Pending")

    annotate(
        kubectl,
        ns,
        "kopfed",
        "kopf.zalando.org/last-handled-configuration={not json",
        as_user="mallory",
    )
    done = annotate(kubectl, ns, "kopfed", "greenlight.dev/decision=approve", as_user="alice")

    assert done.returncode == 0, done.stderr
    wait_phase(kubectl, ns, "kopfed", "Approved", timeout=10)


def test_deleting_a_pending_request_drops_its_gauge_and_is_audited_with_who(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("doomed", ns), people.orchestrator)
    obj = wait_phase(kubectl, ns, "doomed", "Pending")
    poll(lambda: operator.metric("greenlight_requests_pending") >= 1, timeout=10)
    pending = operator.metric("greenlight_requests_pending")

    kubectl("-n", ns, "delete", "apr/doomed", as_user="root", as_groups=("system:masters",))

    poll(lambda: operator.metric("greenlight_requests_pending") == pending - 1, timeout=10)
    uid = obj["metadata"]["uid"]
    deleted = poll(
        lambda: [
            r
            for r in operator.audit_records()
            if r["event"] == "deleted" and r["request"]["uid"] == uid
        ],
        timeout=10,
    )
    assert [(r["actor"], r["request"]["phase"]) for r in deleted] == [("root", "Pending")]


def test_recreated_request_with_the_same_name_starts_afresh(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("again", ns, timeout="1m"), people.orchestrator)
    wait_phase(kubectl, ns, "again", "Pending")
    annotate(kubectl, ns, "again", "greenlight.dev/decision=approve", as_user="alice")
    wait_phase(kubectl, ns, "again", "Approved")
    kubectl("-n", ns, "delete", "apr/again")

    create(kubectl, approval_request("again", ns), people.orchestrator)
    fresh = wait_phase(kubectl, ns, "again", "Pending")

    time.sleep(1)
    again = get(kubectl, ns, "again")
    assert again["metadata"]["uid"] == fresh["metadata"]["uid"]
    assert again["status"]["phase"] == "Pending"
    assert again["status"]["approvals"] == []


def test_what_decides_when_a_request_goes_away_is_set_at_creation_only(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    """An owner reference to nothing would have the garbage collector delete the request for an
    approver who may patch but not delete; a finalizer would hold its deletion."""
    ns = people.namespace
    manifest = approval_request("owned", ns)
    manifest["metadata"]["finalizers"] = ["example.com/hold"]
    create(kubectl, manifest, people.orchestrator)
    wait_phase(kubectl, ns, "owned", "Pending")
    orphaning = {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "0000-gone"}
            ]
        }
    }

    for patch in (orphaning, {"metadata": {"finalizers": ["example.com/hold", "x.io/stuck"]}}):
        done = kubectl(
            "-n", ns, "patch", "apr/owned", "--type=merge", "-p", json.dumps(patch),
            as_user="alice", check=False,
        )  # fmt: skip
        assert done.returncode != 0
        assert "set when it is created only" in done.stderr or "cannot be added" in done.stderr

    removed = kubectl(
        "-n", ns, "patch", "apr/owned", "--type=merge", "-p",
        json.dumps({"metadata": {"finalizers": None}}), as_user="alice", check=False,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    obj = get(kubectl, ns, "owned")
    assert "ownerReferences" not in obj["metadata"]
    assert "finalizers" not in obj["metadata"]


def test_a_dry_run_decision_hands_out_no_record_the_operator_would_count(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    """`kubectl annotate --dry-run=server` is answered as a real decision would be, but the
    record it shows is signed for dry runs only: planted later, it would count for nothing."""
    ns = people.namespace
    create(kubectl, approval_request("rehearsed", ns), people.orchestrator)
    obj = wait_phase(kubectl, ns, "rehearsed", "Pending")
    rehearsal = kubectl.json(
        "-n", ns, "annotate", "apr/rehearsed", "greenlight.dev/decision=approve",
        "--dry-run=server", "-o", "json", as_user="alice",
    )  # fmt: skip

    value = rehearsal["metadata"]["annotations"][record_key("alice")]
    record = DecisionRecord.from_annotation(value)
    key = derive_key(operator.audit_key_file.read_bytes().strip())
    assert (record.user, record.action) == ("alice", Action.APPROVE)
    assert not record.valid(key, obj["metadata"]["uid"])
    assert record_key("alice") not in (
        get(kubectl, ns, "rehearsed")["metadata"].get("annotations") or {}
    )
