"""`python -m bench.policies_eval [--policies 1000] [--samples 5000] [--plan-kib 0]`

How long `PolicySet.evaluate` takes for one create with many ClusterApprovalPolicies installed
(the target: at most 2 ms at the median with 1,000). In process, no cluster: the policies and
requests are generated from a fixed seed, shaped like a platform team's (literal and glob
actions, namespace selectors, a third with a CEL condition), and each request is evaluated
once. The baseline is the same requests against an empty set (reading the requester's own rules).
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.stats import Summary
from greenlight.core.model import Identity
from greenlight.core.plans import PlanReading
from greenlight.core.policies import PolicySet, RequestFacts, compile_policy

TOOLS = ("pulumi", "terraform", "kubectl", "helm", "git", "ansible", "aws", "psql")
VERBS = ("up", "destroy", "apply", "preview", "merge", "delete", "rollout", "drop")
ENVS = ("prod", "staging", "dev", "sandbox")
TEAMS = ("payments", "search", "identity", "data", "platform", "web")
CONDITIONS = (
    "plan.deletes > 0",
    "plan.deletes + plan.replaces > 3",
    "request.spec.target.startsWith('prod') && size(plan.destroyed) > 0",
    "request.requestedBy.groups.exists(g, g == 'ci')",
    "plan.resourceTypes.exists(t, t.startsWith('aws:rds'))",
    "request.spec.policy.requiredApprovals < 2",
    "now.getHours() < 6 || now.getHours() > 20",
)


@dataclass(frozen=True)
class Result:
    policies: int
    evaluate: Summary  # seconds per evaluation
    baseline: Summary  # the same requests, no policies installed
    matched_mean: float  # policies that applied, per request
    conditions_mean: float  # CEL conditions evaluated, per request
    outcomes: Mapping[str, int]  # how many requests got each outcome


def action(rng: random.Random) -> str:
    return f"{rng.choice(TOOLS)} {rng.choice(VERBS)} svc-{rng.randrange(25)}"


def policy_object(rng: random.Random, i: int) -> dict[str, Any]:
    match: dict[str, Any] = {}
    shape = rng.random()
    if shape < 0.75:
        match["actions"] = [action(rng) for _ in range(rng.randint(1, 3))]
    elif shape < 0.98:
        tool = rng.choice(TOOLS)
        match["actions"] = rng.choice(
            ([f"{tool} *"], [f"{tool} {rng.choice(VERBS)} *"], [f"* svc-{rng.randrange(25)}"])
        )
    if rng.random() < 0.5:
        match["targets"] = [rng.choice((f"{rng.choice(ENVS)}*", f"{rng.choice(ENVS)}-?"))]
    if rng.random() < 0.8:
        if rng.random() < 0.5:
            match["namespaces"] = {"matchLabels": {"env": rng.choice(ENVS)}}
        else:
            teams = rng.sample(TEAMS, 2)
            match["namespaces"] = {
                "matchExpressions": [{"key": "team", "operator": "In", "values": teams}]
            }
    if rng.random() < 0.3:
        match["condition"] = rng.choice(CONDITIONS)
    spec: dict[str, Any] = {"match": match}
    roll = rng.random()
    if roll < 0.05:
        spec["outcome"] = "AutoApprove"
    elif roll < 0.10:
        spec["outcome"] = "Refuse"
        spec["message"] = "not through Greenlight"
    else:
        require: dict[str, Any] = {"approvals": rng.randint(1, 3)}
        if rng.random() < 0.3:
            require["approvers"] = {"groups": [f"{rng.choice(TEAMS)}-oncall", "sre"]}
        if rng.random() < 0.1:
            require["fromGroups"] = [{"group": "sre", "count": rng.randint(1, 2)}]
        if rng.random() < 0.5:
            require["maxTimeout"] = rng.choice(("30m", "2h", "1d"))
        require["notify"] = {"slack": [f"C{rng.randrange(10**6):06d}"]}
        spec["require"] = require
        if rng.random() < 0.2:
            spec["reminders"] = {"every": "15m"}
    return {
        "apiVersion": "greenlight.dev/v1alpha1",
        "kind": "ClusterApprovalPolicy",
        "metadata": {"name": f"policy-{i:04d}", "resourceVersion": str(1000 + i)},
        "spec": spec,
    }


def request_facts(rng: random.Random, plan_kib: int) -> RequestFacts:
    env = rng.choice(ENVS)
    team = rng.choice(TEAMS)
    namespace = f"{team}-{env}"
    spec = {
        "action": action(rng),
        "target": f"{env}-{rng.randrange(3)}",
        "requester": {"workflowId": f"wf-{rng.randrange(10**6)}"},
        "plan": {
            "format": "pulumi-preview-json",
            "summary": "-3 resources",
            "details": "x" * (plan_kib * 1024),
        },
        "timeout": "1h",
        "policy": {"requiredApprovals": 1},
    }
    plan = PlanReading(
        "pulumi-preview-json",
        creates=rng.randrange(5),
        deletes=rng.randrange(4),
        replaces=rng.randrange(2),
        destroyed=("urn:pulumi:prod::app::aws:rds/instance:Instance::db",),
        resource_types=("aws:rds/instance:Instance", "aws:s3/bucket:Bucket"),
    )
    return RequestFacts(
        namespace=namespace,
        namespace_labels={"kubernetes.io/metadata.name": namespace, "env": env, "team": team},
        spec=spec,
        requested_by=Identity(
            "system:serviceaccount:ci:orchestrator", ("ci", "system:authenticated")
        ),
        now=datetime(2026, 3, 2, 14, 30, tzinfo=UTC),
        plan=plan,
    )


def timed(
    policies: PolicySet, requests: Sequence[RequestFacts]
) -> tuple[list[float], int, Counter[str]]:
    samples, matched, outcomes = [], 0, Counter[str]()
    for facts in requests:
        start = time.perf_counter()
        decision = policies.evaluate(facts)
        samples.append(time.perf_counter() - start)
        matched += len(decision.sources)
        outcomes[decision.outcome.value] += 1
    return samples, matched, outcomes


def measure(
    *, policies: int = 1000, samples: int = 5000, plan_kib: int = 0, seed: int = 7
) -> Result:
    rng = random.Random(seed)
    compiled = [compile_policy(policy_object(rng, i)) for i in range(policies)]
    requests = [request_facts(rng, plan_kib) for _ in range(samples)]
    installed = PolicySet(compiled)
    installed.evaluate(requests[0])  # builds the index once, as the first create after a change
    evaluate, matched, outcomes = timed(installed, requests)
    baseline, _, _ = timed(PolicySet(), requests)
    conditions = sum(
        1
        for facts in requests
        for p in installed.policies()
        if p.condition is not None
        and p.selects(facts.namespace, facts.namespace_labels)
        and p.names(str(facts.spec["action"]), str(facts.spec["target"]))
    )
    return Result(
        policies=policies,
        evaluate=Summary.of(evaluate),
        baseline=Summary.of(baseline),
        matched_mean=matched / samples,
        conditions_mean=conditions / samples,
        outcomes=dict(outcomes),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policies_eval", description=__doc__)
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--plan-kib", type=int, default=0, help="size of spec.plan.details")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    result = measure(
        policies=args.policies, samples=args.samples, plan_kib=args.plan_kib, seed=args.seed
    )
    micro = 1e6
    print(f"policies: {result.policies}, requests: {result.evaluate.n}, plan: {args.plan_kib} KiB")
    print(
        f"evaluate: median {result.evaluate.median * micro:.0f} µs, "
        f"p99 {result.evaluate.p99 * micro:.0f} µs, max {result.evaluate.maximum * micro:.0f} µs"
    )
    print(
        f"baseline (no policies): median {result.baseline.median * micro:.0f} µs, "
        f"p99 {result.baseline.p99 * micro:.0f} µs"
    )
    print(
        f"per request: {result.matched_mean:.1f} policies applied, "
        f"{result.conditions_mean:.1f} CEL conditions evaluated"
    )
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
