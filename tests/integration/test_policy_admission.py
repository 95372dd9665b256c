"""Platform-owned policy on a real API server: ClusterApprovalPolicy and ApprovalPolicy judged
at admission by the operator's webhook, as impersonated users.

Every cluster policy here selects only the test's own namespace (label selector on
`kubernetes.io/metadata.name`) and is deleted afterwards: the operator is shared by the session.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import kubernetes
import pytest
from tests.support.kubectl import Kubectl
from tests.support.manifests import annotate, approval_request, get, poll, wait_phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.client import ApprovalClient
from greenlight.core.timefmt import parse_time

SRE = ("sre",)


class Policies:
    """Applies policies as the cluster admin; deletes them all at the end of the test."""

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.made: list[tuple[str, str, str]] = []

    def cluster(self, name: str, spec: dict[str, Any]) -> Any:
        name = f"{self.namespace}-{name}"
        spec = json.loads(json.dumps(spec))
        spec.setdefault("match", {}).setdefault(
            "namespaces", {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}}
        )
        return self._apply("ClusterApprovalPolicy", name, None, spec)

    def namespaced(self, name: str, spec: dict[str, Any]) -> Any:
        return self._apply("ApprovalPolicy", name, self.namespace, spec)

    def _apply(self, kind: str, name: str, namespace: str | None, spec: dict[str, Any]) -> Any:
        meta: dict[str, Any] = {"name": name}
        if namespace:
            meta["namespace"] = namespace
        body = {"apiVersion": "greenlight.dev/v1alpha1", "kind": kind, "metadata": meta}
        self.kubectl("apply", "-f", "-", input=json.dumps(body | {"spec": spec}))
        self.made.append((kind, name, namespace or ""))
        return body

    def delete(self, kind: str, name: str) -> None:
        full = f"{self.namespace}-{name}" if kind == "ClusterApprovalPolicy" else name
        ns = ["-n", self.namespace] if kind == "ApprovalPolicy" else []
        self.kubectl(*ns, "delete", kind.lower(), full)

    def cleanup(self) -> None:
        for kind, name, namespace in self.made:
            ns = ["-n", namespace] if namespace else []
            self.kubectl(*ns, "delete", kind.lower(), name, "--ignore-not-found")


@pytest.fixture
def policies(people: People, kubectl: Kubectl) -> Iterator[Policies]:
    made = Policies(kubectl, people.namespace)
    yield made
    made.cleanup()


def create_when_applied(
    kubectl: Kubectl, manifest: dict[str, Any], as_user: str, expect: str | None = None
) -> Any:
    """Create the request once the operator's policy watch has the new policy (retried while
    the answer is still the old one); `expect`: a text the refusal must contain."""

    def attempt() -> Any:
        done = kubectl(
            "create", "-f", "-", input=json.dumps(manifest), as_user=as_user, check=False
        )
        if expect is None:
            return done if done.returncode == 0 else None
        if done.returncode == 0:  # admitted under the old policy set: remove and retry
            kubectl(
                "-n",
                manifest["metadata"]["namespace"],
                "delete",
                "apr",
                manifest["metadata"]["name"],
                "--wait=true",
            )
            return None
        return done if expect in done.stderr else None

    return poll(attempt, timeout=20, interval=0.3)


def stamped(
    kubectl: Kubectl, manifest: dict[str, Any], as_user: str, applied: Callable[[Any], bool]
) -> dict[str, Any]:
    """Create the request and return it once handled; when `applied` says the stamp predates
    the policies just written (they reach the webhook through a watch), create it again."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]

    def attempt() -> Any:
        create_when_applied(kubectl, manifest, as_user)
        obj = poll(
            lambda: (o := get(kubectl, namespace, name)).get("status", {}).get("phase") and o, 20
        )
        return (
            obj
            if applied(obj["status"].get("policy") or {})
            else _recreate(kubectl, namespace, name)
        )

    result: dict[str, Any] = poll(attempt, timeout=30, interval=0.5)
    return result


def audit_of(operator: OperatorProcess, uid: str, event: str) -> list[dict[str, Any]]:
    return [
        r
        for r in operator.audit_records()
        if r["event"] == event and (r.get("request") or {}).get("uid") == uid
    ]


def test_a_requester_cannot_loosen_any_rule_of_a_cluster_policy(
    operator: OperatorProcess, people: People, kubectl: Kubectl, policies: Policies
) -> None:
    policies.cluster(
        "prod-two-sre",
        {
            "match": {"targets": ["prod*"]},
            "require": {"approvals": 2, "approvers": {"groups": ["sre"]}, "maxTimeout": "10m"},
        },
    )
    loose = approval_request(
        "loose",
        people.namespace,
        target="production",
        timeout="2h",
        policy={"requiredApprovals": 1},
    )
    obj = stamped(kubectl, loose, people.orchestrator, lambda p: p.get("requiredApprovals") == 2)
    policy = obj["status"]["policy"]
    assert policy["requiredApprovals"] == 2
    assert policy["timeout"] == "10m"
    assert any(
        f"ClusterApprovalPolicy/{people.namespace}-prod-two-sre@" in s for s in policy["from"]
    )
    created = parse_time(obj["metadata"]["creationTimestamp"])
    assert parse_time(obj["status"]["expiresAt"]) - created == timedelta(minutes=10)

    outside = annotate(
        kubectl, people.namespace, "loose", "greenlight.dev/decision=approve", as_user=people.alice
    )
    assert outside.returncode != 0
    assert "may not decide" in outside.stderr
    assert "sre" in outside.stderr
    uid = obj["metadata"]["uid"]
    refused = [
        r for r in audit_of(operator, uid, "decision_attempted") if r["outcome"] == "refused"
    ]
    assert any(r["actor"] == people.alice and r["reason"] == "not_in_approvers" for r in refused)

    first = annotate(
        kubectl,
        people.namespace,
        "loose",
        "greenlight.dev/decision=approve",
        as_user=people.bob,
        as_groups=SRE,
    )
    assert first.returncode == 0, first.stderr
    poll(lambda: len(get(kubectl, people.namespace, "loose")["status"]["approvals"]) == 1, 20)
    assert get(kubectl, people.namespace, "loose")["status"]["phase"] == "Pending"
    second = annotate(
        kubectl,
        people.namespace,
        "loose",
        "greenlight.dev/decision=approve",
        as_user=people.carol,
        as_groups=SRE,
    )
    assert second.returncode == 0, second.stderr
    wait_phase(kubectl, people.namespace, "loose", "Approved")


def _recreate(kubectl: Kubectl, namespace: str, name: str) -> bool:
    """The request was admitted before the policy reached the webhook: delete it, try again."""
    kubectl("-n", namespace, "delete", "apr", name, "--ignore-not-found", "--wait=true")
    return False


def test_namespace_and_cluster_policies_combine_to_the_strictest(
    operator: OperatorProcess, people: People, kubectl: Kubectl, policies: Policies
) -> None:
    policies.cluster("two", {"require": {"approvals": 2, "maxTimeout": "20m"}})
    policies.namespaced("three", {"require": {"approvals": 3, "maxTimeout": "1h"}})
    manifest = approval_request("both", people.namespace)
    obj = stamped(kubectl, manifest, people.orchestrator, lambda p: len(p.get("from") or ()) == 2)
    policy = obj["status"]["policy"]
    assert policy["requiredApprovals"] == 3
    assert policy["timeout"] == "20m"


def test_auto_approve_decides_at_once_and_names_the_policy(
    operator: OperatorProcess, people: People, kubectl: Kubectl, policies: Policies
) -> None:
    policies.cluster(
        "previews", {"match": {"actions": ["pulumi preview*"]}, "outcome": "AutoApprove"}
    )
    manifest = approval_request("preview", people.namespace, action="pulumi preview")
    obj = stamped(
        kubectl, manifest, people.orchestrator, lambda p: p.get("outcome") == "AutoApprove"
    )
    assert obj["status"]["phase"] == "Approved"
    decision = obj["status"]["decision"]
    assert decision["via"] == "policy"
    assert decision["by"].startswith(f"policy:ClusterApprovalPolicy/{people.namespace}-previews@")
    assert obj["status"].get("receipt"), "an auto-approved request carries a receipt too"
    terminal = audit_of(operator, obj["metadata"]["uid"], "decided")
    assert terminal
    assert terminal[0]["actor"] == decision["by"]


def test_refuse_on_plan_deletes_is_refused_at_creation_with_the_policy_named(
    operator: OperatorProcess, people: People, kubectl: Kubectl, policies: Policies
) -> None:
    policies.cluster(
        "no-db-deletes",
        {
            "match": {"condition": 'plan.destroyed.exists(r, r.startsWith("aws_db_instance."))'},
            "outcome": "Refuse",
            "message": "databases are deleted through the change board",
        },
    )
    plan = {
        "format_version": "1.2",
        "terraform_version": "1.9.0",
        "resource_changes": [
            {
                "address": "aws_db_instance.main",
                "mode": "managed",
                "type": "aws_db_instance",
                "name": "main",
                "change": {"actions": ["delete"]},
            }
        ],
    }
    manifest = approval_request(
        "drop-db",
        people.namespace,
        plan={"format": "terraform-plan-json", "details": json.dumps(plan)},
    )
    done = create_when_applied(kubectl, manifest, people.orchestrator, expect="refused by policy")
    assert f"ClusterApprovalPolicy/{people.namespace}-no-db-deletes" in done.stderr
    assert "change board" in done.stderr
    refused = [
        r
        for r in operator.audit_records()
        if r.get("reason") == "policy_refused" and r["actor"] == people.orchestrator
    ]
    assert refused, "the refused create is on record"


def test_malformed_plan_json_is_refused_with_its_position(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    manifest = approval_request(
        "bad-plan",
        people.namespace,
        plan={"format": "terraform-plan-json", "details": '{"resource_changes": [1,]}'},
    )
    done = kubectl(
        "create", "-f", "-", input=json.dumps(manifest), as_user=people.orchestrator, check=False
    )
    assert done.returncode != 0
    assert "spec.plan.details" in done.stderr
    assert "column" in done.stderr


def test_a_stamped_request_keeps_its_rules_when_the_policy_changes(
    operator: OperatorProcess, people: People, kubectl: Kubectl, policies: Policies
) -> None:
    policies.cluster("two", {"require": {"approvals": 2}})
    manifest = approval_request("kept", people.namespace)
    stamped(kubectl, manifest, people.orchestrator, lambda p: p.get("requiredApprovals") == 2)
    policies.delete("ClusterApprovalPolicy", "two")
    one = annotate(
        kubectl, people.namespace, "kept", "greenlight.dev/decision=approve", as_user=people.alice
    )
    assert one.returncode == 0, one.stderr
    poll(lambda: len(get(kubectl, people.namespace, "kept")["status"]["approvals"]) == 1, 20)
    assert get(kubectl, people.namespace, "kept")["status"]["phase"] == "Pending"


def test_invalid_policies_are_refused_with_the_field_named(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    for spec, field in (
        ({"match": {"condition": "plan.deletes >"}}, "spec.match.condition"),
        ({"match": {"actions": ["prod-["]}}, "spec.match.actions[0]"),
    ):
        body = {
            "apiVersion": "greenlight.dev/v1alpha1",
            "kind": "ApprovalPolicy",
            "metadata": {"name": "broken", "namespace": people.namespace},
            "spec": spec,
        }
        done = kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
        assert done.returncode != 0, f"{field}: accepted"
        assert field in done.stderr, done.stderr


def test_a_governed_namespace_refuses_requests_no_policy_matches(
    operator: OperatorProcess, people: People, kubectl: Kubectl, policies: Policies
) -> None:
    policies.cluster(
        "governed", {"match": {"actions": ["terraform apply"]}, "governNamespaces": True}
    )
    manifest = approval_request("unmatched", people.namespace, action="rm -rf")
    done = create_when_applied(kubectl, manifest, people.orchestrator, expect="refused by policy")
    assert "rm -rf" in done.stderr


def test_check_answers_a_requester_who_cannot_read_policies(
    operator: OperatorProcess, people: People, kubectl: Kubectl, policies: Policies
) -> None:
    cannot = kubectl(
        "auth",
        "can-i",
        "list",
        "clusterapprovalpolicies.greenlight.dev",
        as_user=people.orchestrator,
        check=False,
    )
    assert cannot.stdout.strip() == "no"
    policies.cluster(
        "two-sre",
        {
            "match": {"actions": ["pulumi destroy"]},
            "require": {"approvals": 2, "fromGroups": [{"group": "sre", "count": 1}]},
        },
    )
    policies.cluster(
        "previews", {"match": {"actions": ["pulumi preview"]}, "outcome": "AutoApprove"}
    )
    policies.cluster("no-rm", {"match": {"actions": ["rm *"]}, "outcome": "Refuse"})
    client = _client_as(kubectl, people.namespace, people.orchestrator)
    fields = {"target": "production", "workflow_id": "wf-check"}

    def answers() -> Any:
        need = client.check(action="pulumi destroy", **fields)
        auto = client.check(action="pulumi preview", **fields)
        never = client.check(action="rm -rf /", **fields)
        seen = (need.outcome, auto.outcome, never.outcome)
        last.append((need, auto, never))
        return (need, auto, never) if seen == ("RequireApproval", "AutoApprove", "Refuse") else None

    last: list[Any] = []

    try:
        need, auto, never = poll(answers, timeout=20, interval=0.5)
    except AssertionError:
        raise AssertionError(f"check answered {last[-1:]}") from None
    assert (need.exit_code, auto.exit_code, never.exit_code) == (2, 0, 3)
    assert need.policy["requiredApprovals"] == 2
    assert need.policy["fromGroups"] == [{"group": "sre", "count": 1}]
    assert f"{people.namespace}-no-rm" in never.message
    assert kubectl.json("-n", people.namespace, "get", "apr")["items"] == []  # nothing created


def _client_as(kubectl: Kubectl, namespace: str, user: str) -> ApprovalClient:
    api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubectl.kubeconfig)
    )
    api.set_default_header("Impersonate-User", user)
    return ApprovalClient(namespace, api_client=api)
