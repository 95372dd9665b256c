"""Bad ClusterApprovalPolicies and ApprovalPolicies are refused by the API server itself, with a
message naming the field, and the shipped examples are accepted (crds/, real kube-apiserver)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.kubectl import Kubectl

EXAMPLES = Path(__file__).resolve().parents[2] / "helm" / "greenlight" / "files" / "policies"
STEP = {"after": "1h", "notify": {"slack": ["C0123456"]}}

# (case id, kind, spec, the field path kubectl must name, the message)
CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    (
        "unclosed-glob",
        "ClusterApprovalPolicy",
        {"match": {"actions": ["pulumi *", "prod-["]}},
        "spec.match.actions[1]",
        "invalid glob, a '[' is never closed",
    ),
    (
        "default-longer-than-max",
        "ClusterApprovalPolicy",
        {"require": {"defaultTimeout": "30m", "maxTimeout": "10m"}},
        "spec.require.defaultTimeout",
        "defaultTimeout must not be longer than maxTimeout",
    ),
    (
        "default-longer-than-an-hour",
        "ClusterApprovalPolicy",
        {"require": {"defaultTimeout": "2h"}},
        "spec.require.defaultTimeout",
        "must be between 1m and 1h",
    ),
    (
        "max-timeout-8d",
        "ClusterApprovalPolicy",
        {"require": {"maxTimeout": "8d"}},
        "spec.require.maxTimeout",
        "must be between 1m and 7d",
    ),
    (
        "approvals-11",
        "ClusterApprovalPolicy",
        {"require": {"approvals": 11}},
        "spec.require.approvals",
        "should be less than or equal to 10",
    ),
    (
        "escalation-not-increasing",
        "ClusterApprovalPolicy",
        {"escalation": [STEP, {**STEP, "after": "30m"}]},
        "spec.escalation",
        "each escalation step must come after the previous one",
    ),
    (
        "escalation-four-steps",
        "ClusterApprovalPolicy",
        {"escalation": [{**STEP, "after": f"{i}h"} for i in range(1, 5)]},
        "spec.escalation",
        "must have at most 3 items",
    ),
    (
        "escalation-tells-nobody",
        "ClusterApprovalPolicy",
        {"escalation": [{"after": "1h", "notify": {}}]},
        "spec.escalation[0]",
        "an escalation step must notify a channel or mention someone",
    ),
    (
        "reminders-every-minute",
        "ClusterApprovalPolicy",
        {"reminders": {"every": "1m"}},
        "spec.reminders.every",
        "must be between 5m and 24h",
    ),
    (
        "require-on-auto-approve",
        "ClusterApprovalPolicy",
        {"outcome": "AutoApprove", "require": {"approvals": 2}},
        "spec",
        "require, reminders and escalation apply to outcome RequireApproval only",
    ),
    (
        "selector-in-without-values",
        "ClusterApprovalPolicy",
        {"match": {"namespaces": {"matchExpressions": [{"key": "env", "operator": "In"}]}}},
        "spec.match.namespaces.matchExpressions[0]",
        "operators In and NotIn need values",
    ),
    (
        "namespaced-selects-namespaces",
        "ApprovalPolicy",
        {"match": {"namespaces": {"matchLabels": {"env": "prod"}}}},
        "spec.match.namespaces",
        "match.namespaces is for a ClusterApprovalPolicy only",
    ),
    (
        "namespaced-governs",
        "ApprovalPolicy",
        {"governNamespaces": True},
        "spec.governNamespaces",
        "governNamespaces is for a ClusterApprovalPolicy only",
    ),
    (
        "namespaced-auto-approves",
        "ApprovalPolicy",
        {"outcome": "AutoApprove"},
        "spec.outcome",
        "outcome AutoApprove is for a ClusterApprovalPolicy only",
    ),
]


def policy(kind: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    metadata = (
        {"name": "bad"}
        if kind == "ClusterApprovalPolicy"
        else {"name": "bad", "namespace": namespace}
    )
    return {
        "apiVersion": "greenlight.dev/v1alpha1",
        "kind": kind,
        "metadata": metadata,
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("kind", "spec", "field", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_malformed_policy_is_refused_naming_the_field(
    kubectl: Kubectl, namespace: str, kind: str, spec: dict[str, Any], field: str, message: str
) -> None:
    done = kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps(policy(kind, namespace, spec)),
        check=False,
    )

    assert done.returncode != 0
    assert f"{field}: Invalid value" in done.stderr or f"{field}: Too many" in done.stderr, (
        done.stderr
    )
    assert message in done.stderr, done.stderr


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_the_shipped_example_policies_are_accepted(kubectl: Kubectl, example: str) -> None:
    manifest = yaml.safe_load((EXAMPLES / example).read_text())

    kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(manifest))
