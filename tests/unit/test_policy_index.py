"""The policy index admission reads (adapters/policyindex.py): fails closed before it has listed,
and never lets a policy it cannot read pass a request with fewer rules."""

from __future__ import annotations

from typing import Any

import pytest

from greenlight.adapters.policyindex import NotReady, PolicyIndex
from greenlight.core.model import Identity
from greenlight.core.policies import Outcome, PolicyKind

SPEC = {"action": "pulumi destroy", "target": "production", "requester": {"workflowId": "w"}}
CREATOR = Identity("system:serviceaccount:ci:bot")


def policy(name: str, spec: dict[str, Any], namespace: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "resourceVersion": "7"}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta, "spec": spec}


def test_nothing_is_judged_before_the_policies_were_listed() -> None:
    with pytest.raises(NotReady, match="not loaded the approval policies yet"):
        PolicyIndex().decide("ci", SPEC, CREATOR, None)


def test_listed_policies_apply_and_deleted_ones_stop_applying() -> None:
    index = PolicyIndex.fixed()
    index._replace(PolicyKind.CLUSTER, [policy("two", {"require": {"approvals": 2}})])
    decision = index.decide("ci", SPEC, CREATOR, None)
    assert decision.effective.required_approvals == 2
    assert decision.sources == ("ClusterApprovalPolicy/two@7",)

    index._apply(PolicyKind.CLUSTER, "DELETED", policy("two", {}))
    assert index.decide("ci", SPEC, CREATOR, None).effective.required_approvals == 1


def test_a_policy_that_does_not_compile_blocks_the_creates_it_could_apply_to() -> None:
    index = PolicyIndex.fixed()
    index._apply(
        PolicyKind.NAMESPACED, "ADDED", policy("typo", {"match": {"actions": ["prod-["]}}, "ci")
    )
    assert index.broken_in_scope("ci") == ["ApprovalPolicy/ci/typo"]
    assert index.broken_in_scope("other") == []
    index._apply(PolicyKind.NAMESPACED, "MODIFIED", policy("typo", {}, "ci"))
    assert index.broken_in_scope("ci") == []


def test_a_broken_condition_is_read_strictly() -> None:
    index = PolicyIndex.fixed()
    broken = policy("cond", {"match": {"condition": "plan.deletes >"}, "outcome": "Refuse"})
    index._apply(PolicyKind.CLUSTER, "ADDED", broken)
    assert index.broken_in_scope("ci") == []  # kept in its strict reading instead
    assert index.decide("ci", SPEC, CREATOR, None).outcome is Outcome.REFUSE


def test_namespace_labels_select_cluster_policies() -> None:
    index = PolicyIndex.fixed()
    selector = {"matchLabels": {"env": "prod"}}
    index._replace(
        PolicyKind.CLUSTER,
        [policy("prod", {"match": {"namespaces": selector}, "require": {"approvals": 3}})],
    )
    index._replace_namespaces([{"metadata": {"name": "ci", "labels": {"env": "prod"}}}])
    assert index.decide("ci", SPEC, CREATOR, None).effective.required_approvals == 3
    index._namespace("MODIFIED", {"metadata": {"name": "ci", "labels": {"env": "dev"}}})
    assert index.decide("ci", SPEC, CREATOR, None).effective.required_approvals == 1
