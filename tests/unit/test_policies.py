"""Platform policy (`core/policies.py`): compiling, matching, combining, and `status.policy`."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from greenlight.core import policies
from greenlight.core.durations import format_duration, parse_duration, parse_timeout
from greenlight.core.model import Identity
from greenlight.core.plans import PlanReading
from greenlight.core.policies import (
    MAX_EFFECTIVE_STEPS,
    MAX_MATCHING,
    ApproverSet,
    CompiledPolicy,
    EffectivePolicy,
    EscalationStep,
    GroupQuorum,
    Mention,
    Notify,
    Outcome,
    PolicyDecision,
    PolicyError,
    PolicyKind,
    PolicySet,
    RequestFacts,
    combine,
    compile_glob,
    compile_policy,
    glob_problem,
)
from greenlight.core.policy import quorum_met

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # a Monday afternoon
CI = Identity("system:serviceaccount:ci:orchestrator", ("ci", "system:authenticated"))
PROD_LABELS = {"kubernetes.io/metadata.name": "payments", "env": "prod", "team": "payments"}


def cluster(name: str, spec: dict[str, Any], rv: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "greenlight.dev/v1alpha1",
        "kind": "ClusterApprovalPolicy",
        "metadata": {"name": name, "resourceVersion": rv},
        "spec": spec,
    }


def namespaced(namespace: str, name: str, spec: dict[str, Any], rv: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "greenlight.dev/v1alpha1",
        "kind": "ApprovalPolicy",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "spec": spec,
    }


def facts(
    *,
    plan_details: str = "",
    action: str = "pulumi up",
    target: str = "production",
    namespace: str = "payments",
    labels: dict[str, str] | None = None,
    plan: PlanReading | None = None,
    requester: Identity = CI,
    now: datetime = NOW,
    **spec: Any,
) -> RequestFacts:
    if plan_details:
        spec["plan"] = {"format": "text", "summary": "drop it", "details": plan_details}
    return RequestFacts(
        namespace=namespace,
        namespace_labels=PROD_LABELS if labels is None else labels,
        spec={"action": action, "target": target, "requester": {"workflowId": "wf-1"}, **spec},
        requested_by=requester,
        now=now,
        plan=plan,
    )


def decide(*objects: dict[str, Any], request: RequestFacts | None = None) -> PolicyDecision:
    policies = PolicySet(compile_policy(obj) for obj in objects)
    return policies.evaluate(request or facts())


def refused(obj: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as caught:
        compile_policy(obj)
    return str(caught.value)


# --- compiling: every error names its field ---------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            cluster("p", {"match": {"actions": ["a", "b", "prod-["]}}),
            "spec.match.actions[2]: invalid glob 'prod-[': '[' at position 5 is never closed",
        ),
        (cluster("p", {"match": {"targets": ["[]"]}}), "spec.match.targets[0]: invalid glob '[]'"),
        (cluster("p", {"match": {"targets": []}}), "spec.match.targets: must list at least one"),
        (
            cluster("p", {"match": {"actions": ["a"] * 21}}),
            "spec.match.actions: lists 21 items; at most 20",
        ),
        (
            cluster("p", {"match": {"condition": "plan.deletes >"}}),
            "spec.match.condition: CEL does not compile: Failed to parse expression",
        ),
        (
            cluster("p", {"match": {"condition": "foo.bar == 1"}}),
            "spec.match.condition: CEL names unknown variable 'foo': a condition can use "
            "request, plan and now",
        ),
        (
            cluster("p", {"match": {"condition": "now.getHours('Europe/Berlin') < 9"}}),
            "spec.match.condition: CEL calls 'getHours', which the CEL library does not provide",
        ),
        (
            cluster("p", {"match": {"condition": "'yes'"}}),
            "spec.match.condition: CEL must return a bool, and returns a string",
        ),
        (
            cluster("p", {"require": {"maxTimeout": "10m", "defaultTimeout": "30m"}}),
            "spec.require.defaultTimeout: 30m is longer than maxTimeout 10m",
        ),
        (
            cluster("p", {"require": {"defaultTimeout": "2h"}}),
            "spec.require.defaultTimeout: duration '2h' must be between 1m and 1h",
        ),
        (
            cluster("p", {"require": {"maxTimeout": "8d"}}),
            "spec.require.maxTimeout: timeout '8d' must be between 1m and 7d",
        ),
        (
            cluster("p", {"require": {"defaultTimeout": "soon"}}),
            "spec.require.defaultTimeout: duration 'soon' is not a duration",
        ),
        (
            cluster("p", {"require": {"approvals": 11}}),
            "spec.require.approvals: 11 is not between 1 and 10",
        ),
        (
            cluster("p", {"require": {"approvals": True}}),
            "spec.require.approvals: must be an integer, not True",
        ),
        (
            cluster("p", {"require": {"approvers": {"groups": ["sre", 7]}}}),
            "spec.require.approvers.groups[1]: must be a string, is a int",
        ),
        (
            cluster("p", {"require": {"fromGroups": [{"group": "sre"}, {"group": "sre"}]}}),
            "spec.require.fromGroups[1].group: 'sre' is listed twice",
        ),
        (
            cluster("p", {"require": {"notify": {"slack": ["#ops room"]}}}),
            "spec.require.notify.slack[0]: '#ops room' does not match",
        ),
        (
            cluster("p", {"reminders": {"every": "1m"}}),
            "spec.reminders.every: duration '1m' must be between 5m and 24h",
        ),
        (
            cluster(
                "p",
                {
                    "escalation": [
                        {"after": "1h", "notify": {"slack": ["C1"]}},
                        {"after": "30m", "notify": {"slack": ["C2"]}},
                    ]
                },
            ),
            "spec.escalation[1].after: must come after the previous step's 1h",
        ),
        (
            cluster(
                "p",
                {
                    "escalation": [
                        {"after": f"{i}h", "notify": {"slack": ["C1"]}} for i in range(1, 5)
                    ]
                },
            ),
            "spec.escalation: lists 4 items; at most 3",
        ),
        (
            cluster("p", {"escalation": [{"after": "1h", "notify": {}}]}),
            "spec.escalation[0]: tells nobody: give notify or mention",
        ),
        (
            cluster("p", {"escalation": [{"after": "1d", "notify": {"slack": ["C1"]}}]}),
            "spec.escalation[0].after: duration '1d' is not a duration like 15m, 1h or 1h30m",
        ),
        (
            cluster("p", {"escalation": [{"after": "1h", "mention": {"slackUserGroups": ["x"]}}]}),
            "spec.escalation[0].mention.slackUserGroups[0]: 'x' does not match",
        ),
        (cluster("p", {"outcome": "Maybe"}), "spec.outcome: 'Maybe' is not one of"),
        (
            cluster("p", {"outcome": "AutoApprove", "require": {"approvals": 2}}),
            "spec.require: applies to outcome RequireApproval only, not AutoApprove",
        ),
        (
            cluster("p", {"message": "why"}),
            "spec.message: is shown on outcome Refuse only; remove it",
        ),
        (
            cluster(
                "p",
                {"match": {"namespaces": {"matchExpressions": [{"key": "env", "operator": "In"}]}}},
            ),
            "spec.match.namespaces.matchExpressions[0].values: operator In needs at least one",
        ),
        (
            cluster(
                "p",
                {
                    "match": {
                        "namespaces": {
                            "matchExpressions": [
                                {"key": "env", "operator": "Matches", "values": ["x"]}
                            ]
                        }
                    }
                },
            ),
            "spec.match.namespaces.matchExpressions[0].operator: 'Matches' is not one of",
        ),
        (
            namespaced("team", "p", {"match": {"namespaces": {"matchLabels": {"env": "prod"}}}}),
            "spec.match.namespaces: only a ClusterApprovalPolicy selects namespaces",
        ),
        (
            namespaced("team", "p", {"governNamespaces": False}),
            "spec.governNamespaces: only a ClusterApprovalPolicy can govern namespaces",
        ),
        (
            namespaced("team", "p", {"outcome": "AutoApprove"}),
            "spec.outcome: AutoApprove is only for a ClusterApprovalPolicy",
        ),
        ({"kind": "Policy", "metadata": {"name": "p"}}, "kind: 'Policy' is not"),
        (cluster("", {}), "metadata.name: must be 1..253 characters long"),
        (
            namespaced("team", "p", {"require": {"notify": {"teams": ["../v3/activities"]}}}),
            "spec.require.notify.teams[0]: ",
        ),
    ],
    ids=itertools.count(),
)
def test_a_policy_greenlight_cannot_apply_is_refused_naming_the_field(
    obj: dict[str, Any], message: str
) -> None:
    assert refused(obj).startswith(message)


LIST_65 = "[" + ", ".join(["'x'"] * 65) + "]"


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (
            "plan.destroyed.exists(r, plan.resourceTypes.exists(t, r.startsWith(t)))",
            "CEL has a comprehension (exists) inside another; at most one level",
        ),
        ("size(plan.destroyed.map(r, r)) > 0", "CEL uses map, which copies the list it builds"),
        (
            " && ".join(f"plan.destroyed.all(r{i}, r{i} != '')" for i in range(5)),
            "CEL has more than 4 comprehensions",
        ),
        (f"request.namespace in {LIST_65}", "CEL has a list literal of more than 64 items"),
        (
            "[0, 1].exists(x, request.spec.action.matches('\\\\w{10}'))",
            "CEL pattern '\\\\w{10}' takes ",  # about 2 ms: fine once, not at every element
        ),
        (
            " || ".join(["request.spec.action.matches('^a')"] * 5),
            "CEL calls matches more than 4 times",
        ),
        (
            "request.spec.action.matches(request.spec.target)",
            "CEL matches takes a string literal as its pattern",
        ),
        (
            "request.spec.action.matches('\\\\w{200}')",
            "CEL pattern '\\\\w{200}' takes ",
        ),
    ],
)
def test_a_condition_that_could_stall_admission_is_refused(condition: str, message: str) -> None:
    assert refused(cluster("p", {"match": {"condition": condition}})).startswith(
        f"spec.match.condition: {message}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "request.spec.action.matches(r'^terraform (apply|destroy)$') && plan.deletes > 0",
        "plan.destroyed.exists(r, r.matches('(^|[.])aws_db_instance[.]'))",
        "request.spec.action.matches('\\\\w{10}')",  # about 2 ms, outside any comprehension
    ],
)
def test_a_literal_pattern_that_compiles_fast_is_accepted(text: str) -> None:
    assert compile_policy(cluster("p", {"match": {"condition": text}})).condition is not None


def test_conditions_past_the_time_a_create_may_take_count_strictly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(policies, "CONDITIONS_SECONDS", 0.0)
    refuse = cluster("r", {"match": {"condition": "false"}, "outcome": "Refuse", "message": "no"})
    decision = decide(refuse)

    assert decision.outcome is Outcome.REFUSE  # not evaluated: it holds, as an error would
    assert decision.condition_errors[0].message == (
        "condition not evaluated: this create's conditions took more than 0 ms"
    )


def test_a_condition_sees_no_string_longer_than_a_valid_spec_has() -> None:
    """Conditions run before the schema is checked: a longer string is cut to one character
    over the bound (the schema refuses the create anyway), so `matches` costs what it costs on
    a valid spec."""
    sized = cluster("p", {"match": {"condition": "size(request.spec.action) == 1025"}})
    assert decide(sized, request=facts(action="a" * 3_000_000)).sources == (
        "ClusterApprovalPolicy/p@1",
    )
    assert decide(sized, request=facts(action="a" * 1024)).sources == ()


def test_a_condition_longer_than_its_bound_is_refused() -> None:
    long = "plan.deletes > 0" + " && plan.deletes > 0" * 110
    assert refused(cluster("p", {"match": {"condition": long}})).startswith(
        "spec.match.condition: must be 1..2048 characters long"
    )


def test_comprehension_words_in_strings_are_not_comprehensions() -> None:
    text = "request.spec.target == 'exists(a, exists(b, c))' && plan.destroyed.all(r, r != '')"
    assert compile_policy(cluster("p", {"match": {"condition": text}})).condition is not None


def test_a_condition_reading_the_creator_with_too_many_groups_errors_strictly() -> None:
    many = Identity("alice", tuple(f"group-{i}" for i in range(300)))
    policy = cluster("p", {"match": {"condition": "'sre' in request.requestedBy.groups"}})
    decision = decide(policy, request=facts(requester=many))
    assert decision.sources == ("ClusterApprovalPolicy/p@1",)
    assert decision.condition_errors[0].message == (
        "condition not evaluated: the creator has 300 groups, more than the 256 a condition "
        "may walk"
    )
    plan_only = cluster("q", {"match": {"condition": "plan.deletes > 0"}, "outcome": "AutoApprove"})
    assert decide(plan_only, request=facts(requester=many)).condition_errors == ()


def test_conditions_see_the_spec_without_the_plan_text() -> None:
    policy = cluster(
        "p",
        {
            "match": {
                "condition": "!has(request.spec.plan.details) && "
                "request.spec.plan.summary == 'drop it'"
            }
        },
    )
    request = facts(plan_details="DROP DATABASE")
    assert decide(policy, request=request).sources


def test_a_cel_syntax_error_gives_the_librarys_line_and_column() -> None:
    message = refused(cluster("p", {"match": {"condition": "plan.deletes > 0 &&"}}))
    assert re.search(r"<input>:1:\d+", message), message


def test_comprehension_variables_are_not_unknown_variables() -> None:
    policy = compile_policy(
        cluster("p", {"match": {"condition": "plan.destroyed.exists(d, d.contains('rds'))"}})
    )
    assert policy.condition is not None
    assert policy.condition.variables == {"plan"}


def test_a_condition_that_does_not_compile_has_a_strict_fallback() -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy(cluster("p", {"match": {"actions": ["pulumi *"], "condition": "x >"}}))
    error = caught.value
    assert error.field == "spec.match.condition"
    assert error.fallback is not None
    assert error.fallback.condition is not None
    assert error.fallback.condition.program is None
    decision = PolicySet([error.fallback]).evaluate(facts())
    assert decision.sources == ("ClusterApprovalPolicy/p@1",)
    assert decision.condition_errors[0].message.startswith("condition did not compile: CEL")
    other = PolicySet([error.fallback]).evaluate(facts(action="helm upgrade"))
    assert other.sources == ()


def test_a_structural_error_has_no_fallback() -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy(cluster("p", {"match": {"actions": ["prod-["]}}))
    assert caught.value.fallback is None


def test_a_full_policy_compiles_to_its_parts() -> None:
    policy = compile_policy(
        cluster(
            "prod",
            {
                "match": {
                    "namespaces": {"matchLabels": {"env": "prod"}},
                    "actions": ["pulumi *"],
                    "targets": ["prod*"],
                    "condition": "plan.deletes > 0",
                },
                "require": {
                    "approvals": 2,
                    "approvers": {"users": ["alice"], "groups": ["sre"]},
                    "fromGroups": [{"group": "sre", "count": 2}],
                    "maxTimeout": "2d",
                    "defaultTimeout": "30m",
                    "notify": {"slack": ["C0123456"], "teams": ["19:a@thread.tacv2"]},
                },
                "reminders": {"every": "15m"},
                "escalation": [
                    {"after": "1h", "mention": {"slackUserGroups": ["S0123ABC"]}},
                ],
                "governNamespaces": True,
            },
            rv="42",
        )
    )
    assert policy.source == "ClusterApprovalPolicy/prod@42"
    assert policy.require.approvals == 2
    assert policy.require.approvers == ApproverSet(("alice",), ("sre",), policy.source)
    assert policy.require.from_groups == (GroupQuorum("sre", 2),)
    assert policy.require.max_timeout == timedelta(days=2)
    assert policy.require.default_timeout == timedelta(minutes=30)
    assert policy.reminders_every == timedelta(minutes=15)
    assert policy.escalation == (
        EscalationStep(timedelta(hours=1), Notify(), Mention(("S0123ABC",))),
    )
    assert policy.govern_namespaces


# --- globs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("pulumi *", "pulumi destroy --stack prod/eu", True),
        ("pulumi *", "pulumi", False),
        ("pulumi *", "Pulumi up", False),  # case-sensitive
        ("prod-?", "prod-1", True),
        ("prod-?", "prod-12", False),  # anchored at both ends
        ("prod-[a-c]", "prod-b", True),
        ("prod-[!a-c]", "prod-b", False),
        ("prod-[!a-c]", "prod-d", True),
        ("[[]x]", "[x]", True),
        ("a[*]", "a*", True),
        ("a[*]", "ab", False),
        ("terraform apply", "terraform apply", True),
        ("terraform apply", "terraform apply -auto-approve", False),
        ("*", "", True),
    ],
)
def test_globs_match_like_fnmatch_case_sensitive_and_whole(
    pattern: str, text: str, matches: bool
) -> None:
    assert compile_glob(pattern).matches(text) is matches


def _crd(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "crds" / name).read_text())
    return document


def _spec_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = _crd(name)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_the_crd_refuses_exactly_the_globs_greenlight_refuses() -> None:
    items = _spec_schema("greenlight.dev_clusterapprovalpolicies.yaml")["properties"]["spec"][
        "properties"
    ]["match"]["properties"]["actions"]["items"]
    rule = items["x-kubernetes-validations"][0]["rule"]
    found = re.fullmatch(r"self\.matches\(r'(.*)'\)", rule)
    assert found is not None
    crd = re.compile(found.group(1))
    for size in range(1, 7):
        for chars in itertools.product("[]!a*", repeat=size):
            pattern = "".join(chars)
            assert (crd.search(pattern) is not None) == (glob_problem(pattern) is None), pattern


def test_the_namespaced_crd_is_the_cluster_crd_without_the_cluster_only_parts() -> None:
    cluster_spec = _spec_schema("greenlight.dev_clusterapprovalpolicies.yaml")["properties"]["spec"]
    own_spec = _spec_schema("greenlight.dev_approvalpolicies.yaml")["properties"]["spec"]
    for key in ("require", "outcome", "reminders", "escalation"):
        if key == "outcome":
            assert cluster_spec["properties"][key]["enum"] == own_spec["properties"][key]["enum"]
            continue
        assert cluster_spec["properties"][key] == own_spec["properties"][key], key
    cluster_match = dict(cluster_spec["properties"]["match"]["properties"])
    own_match = dict(own_spec["properties"]["match"]["properties"])
    refused_namespaces = own_match.pop("namespaces")
    assert refused_namespaces["x-kubernetes-preserve-unknown-fields"] is True
    assert "properties" not in refused_namespaces
    cluster_match.pop("namespaces")
    assert cluster_match == own_match
    assert _crd("greenlight.dev_approvalpolicies.yaml")["spec"]["scope"] == "Namespaced"
    assert _crd("greenlight.dev_clusterapprovalpolicies.yaml")["spec"]["scope"] == "Cluster"


# --- matching ---------------------------------------------------------------------------------


def test_a_policy_with_no_match_applies_to_every_request() -> None:
    decision = decide(cluster("all", {}))
    assert decision.sources == ("ClusterApprovalPolicy/all@1",)


def test_action_and_target_globs_both_have_to_match() -> None:
    policy = cluster(
        "p", {"match": {"actions": ["pulumi *", "terraform apply"], "targets": ["prod*"]}}
    )
    assert decide(policy, request=facts(action="pulumi up", target="production")).sources
    assert decide(policy, request=facts(action="terraform apply", target="prod-eu")).sources
    assert not decide(policy, request=facts(action="pulumi up", target="staging")).sources
    assert not decide(policy, request=facts(action="helm upgrade", target="prod")).sources


@pytest.mark.parametrize(
    ("selector", "labels", "applies"),
    [
        ({"matchLabels": {"env": "prod"}}, {"env": "prod"}, True),
        ({"matchLabels": {"env": "prod"}}, {"env": "staging"}, False),
        ({"matchLabels": {"env": "prod"}}, {}, False),
        (
            {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dr"]}]},
            {"env": "dr"},
            True,
        ),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]},
            {"env": "dev"},
            False,
        ),
        ({"matchExpressions": [{"key": "pci", "operator": "Exists"}]}, {"pci": ""}, True),
        ({"matchExpressions": [{"key": "pci", "operator": "DoesNotExist"}]}, {"pci": ""}, False),
        (
            {
                "matchLabels": {"env": "prod"},
                "matchExpressions": [{"key": "team", "operator": "In", "values": ["web"]}],
            },
            {"env": "prod", "team": "payments"},
            False,
        ),
        ({}, {}, True),  # the empty selector selects every namespace
    ],
)
def test_namespace_selectors_follow_label_selector_rules(
    selector: dict[str, Any], labels: dict[str, str], applies: bool
) -> None:
    decision = decide(
        cluster("p", {"match": {"namespaces": selector}}), request=facts(labels=labels)
    )
    assert bool(decision.sources) is applies


def test_an_approval_policy_applies_only_in_its_own_namespace() -> None:
    policy = namespaced("payments", "own", {"require": {"approvals": 2}})
    assert decide(policy, request=facts(namespace="payments")).effective.required_approvals == 2
    assert decide(policy, request=facts(namespace="search")).sources == ()


def test_cel_sees_the_plan_reading() -> None:
    policy = cluster(
        "deletes",
        {
            "match": {
                "condition": "plan.deletes > 0 && "
                "plan.resourceTypes.exists(t, t.startsWith('aws:rds'))"
            }
        },
    )
    reading = PlanReading(
        "pulumi-preview-json", deletes=2, resource_types=("aws:rds/instance:Instance",)
    )
    assert decide(policy, request=facts(plan=reading)).sources
    assert not decide(policy, request=facts(plan=PlanReading("pulumi-preview-json"))).sources


def test_a_text_plan_reads_as_zero_counts_and_empty_lists() -> None:
    policy = cluster(
        "text",
        {
            "match": {
                "condition": "plan.format == 'text' && plan.creates == 0 "
                "&& size(plan.destroyed) == 0 && !plan.truncated"
            }
        },
    )
    assert decide(policy, request=facts(plan=None)).sources
    unread = RequestFacts(
        namespace="payments",
        spec={
            "action": "pulumi up",
            "target": "production",
            "plan": {"format": "pulumi-preview-json"},
        },
        requested_by=CI,
        now=NOW,
    )
    decision = decide(policy, request=unread)  # a JSON plan Greenlight could not read
    assert (decision.sources, decision.condition_errors) == ((), ())


def test_cel_sees_the_request_spec_and_the_requester() -> None:
    policy = cluster(
        "spec",
        {
            "match": {
                "condition": "request.spec.target.startsWith('prod') && "
                "'ci' in request.requestedBy.groups && "
                "request.namespace == 'payments'"
            }
        },
    )
    assert decide(policy).sources
    assert not decide(policy, request=facts(target="staging")).sources
    assert not decide(policy, request=facts(requester=Identity("alice"))).sources


def test_a_change_window_condition_reads_now_in_utc() -> None:
    window = cluster(
        "outside-window",
        {
            "match": {
                "condition": "now.getDayOfWeek() == 0 || now.getDayOfWeek() == 6 || "
                "now.getHours() < 9 || now.getHours() >= 17"
            },
            "outcome": "Refuse",
            "message": "outside the change window",
        },
    )
    monday_afternoon = decide(window, request=facts(now=NOW))
    assert monday_afternoon.outcome is Outcome.REQUIRE_APPROVAL
    sunday = decide(window, request=facts(now=datetime(2026, 3, 1, 12, 0, tzinfo=UTC)))
    assert sunday.outcome is Outcome.REFUSE
    evening = decide(window, request=facts(now=NOW.replace(hour=19)))
    assert evening.refusal_message == (
        "refused by ClusterApprovalPolicy/outside-window: outside the change window"
    )


def test_literal_and_glob_actions_are_both_found_among_many_policies() -> None:
    objects = [cluster(f"p{i:03d}", {"match": {"actions": [f"tool-{i} run"]}}) for i in range(300)]
    objects.append(cluster("globbed", {"match": {"actions": ["tool-1? run"]}}))
    decision = decide(*objects, request=facts(action="tool-12 run"))
    assert decision.sources == ("ClusterApprovalPolicy/globbed@1", "ClusterApprovalPolicy/p012@1")


def test_sources_list_cluster_policies_first_then_namespaced_by_name() -> None:
    decision = decide(
        namespaced("payments", "b", {}),
        cluster("z", {}),
        namespaced("payments", "a", {}),
        cluster("a", {}),
    )
    assert decision.sources == (
        "ClusterApprovalPolicy/a@1",
        "ClusterApprovalPolicy/z@1",
        "ApprovalPolicy/payments/a@1",
        "ApprovalPolicy/payments/b@1",
    )


def test_upsert_replaces_and_remove_forgets_a_policy() -> None:
    policies = PolicySet([compile_policy(cluster("p", {"require": {"approvals": 2}}))])
    assert policies.evaluate(facts()).effective.required_approvals == 2
    policies.upsert(compile_policy(cluster("p", {"require": {"approvals": 3}}, rv="2")))
    decision = policies.evaluate(facts())
    assert (decision.effective.required_approvals, decision.sources) == (
        3,
        ("ClusterApprovalPolicy/p@2",),
    )
    policies.remove("ClusterApprovalPolicy", "", "p")
    assert policies.evaluate(facts()).sources == ()
    assert len(policies) == 0


# --- evaluation errors fail toward strictness -------------------------------------------------

MISSING_KEY = "request.spec.missing == 'x'"


@pytest.mark.parametrize(
    ("outcome", "applies", "expected"),
    [
        ("RequireApproval", True, Outcome.REQUIRE_APPROVAL),
        ("Refuse", True, Outcome.REFUSE),
        ("AutoApprove", False, Outcome.REQUIRE_APPROVAL),
    ],
)
def test_a_condition_that_errors_counts_as_a_match_unless_it_would_auto_approve(
    outcome: str, applies: bool, expected: Outcome
) -> None:
    spec: dict[str, Any] = {"match": {"condition": MISSING_KEY}, "outcome": outcome}
    if outcome == "Refuse":
        spec["message"] = "no"
    decision = decide(cluster("p", spec))
    assert bool(decision.sources) is applies
    assert decision.outcome is expected
    (error,) = decision.condition_errors
    assert error.source == "ClusterApprovalPolicy/p@1"
    assert error.message.startswith("condition failed: no such key: 'missing'")


def test_a_condition_that_returns_no_bool_is_an_error() -> None:
    decision = decide(
        cluster("p", {"match": {"condition": "request.spec.policy"}}),
        request=facts(policy={"requiredApprovals": 1}),
    )
    assert decision.sources == ("ClusterApprovalPolicy/p@1",)
    assert decision.condition_errors[0].message == "condition returned a map, not a bool"


def test_a_type_error_in_a_condition_is_reported() -> None:
    decision = decide(cluster("p", {"match": {"condition": "plan.deletes > 'many'"}}))
    assert decision.sources
    assert decision.condition_errors[0].message.startswith("condition failed: TypeError")


# --- combination: strictest wins, the requester can only tighten ------------------------------


def test_approvals_are_the_largest_asked_for() -> None:
    two = cluster("two", {"require": {"approvals": 2}})
    three = namespaced("payments", "three", {"require": {"approvals": 3}})
    assert decide(two).effective.required_approvals == 2
    assert decide(two, three).effective.required_approvals == 3
    request = facts(policy={"requiredApprovals": 4})
    assert decide(two, request=request).effective.required_approvals == 4


def test_from_groups_counts_raise_the_approvals_needed() -> None:
    sre = cluster("sre", {"require": {"fromGroups": [{"group": "sre", "count": 2}]}})
    assert decide(sre).effective.required_approvals == 2


def test_from_groups_are_the_union_with_the_largest_count_per_group() -> None:
    first = cluster(
        "a",
        {"require": {"fromGroups": [{"group": "sre", "count": 1}, {"group": "dba", "count": 2}]}},
    )
    second = cluster("b", {"require": {"fromGroups": [{"group": "sre", "count": 2}]}})
    assert decide(first, second).effective.from_groups == (
        GroupQuorum("dba", 2),
        GroupQuorum("sre", 2),
    )


def test_every_source_listing_approvers_restricts() -> None:
    sre = cluster("sre", {"require": {"approvers": {"groups": ["sre"]}}})
    dba = cluster("dba", {"require": {"approvers": {"groups": ["dba"], "users": ["carol"]}}})
    request = facts(policy={"requiredApprovals": 1, "approvers": {"users": ["alice", "bob"]}})
    effective = decide(sre, dba, request=request).effective
    assert [s.source for s in effective.approvers] == [
        "spec.policy.approvers",
        "ClusterApprovalPolicy/dba@1",
        "ClusterApprovalPolicy/sre@1",
    ]
    assert effective.admits("alice", ["sre", "dba"])
    assert not effective.admits("alice", ["sre"])  # not in dba, not carol
    assert not effective.admits("carol", ["sre"])  # not listed by the requester
    assert not effective.admits("dave", ["sre", "dba"])  # not listed by the requester


def test_the_same_approvers_listed_twice_restrict_once() -> None:
    first = cluster("a", {"require": {"approvers": {"groups": ["sre"]}}})
    second = cluster("b", {"require": {"approvers": {"groups": ["sre"]}}})
    assert len(decide(first, second).effective.approvers) == 1


def test_a_policy_listing_no_approvers_does_not_restrict() -> None:
    effective = decide(cluster("p", {"require": {"approvals": 2}})).effective
    assert effective.approvers == ()
    assert effective.admits("anyone", [])


@pytest.mark.parametrize(
    ("asked", "policies", "expected"),
    [
        ({}, [], "1h"),
        ({"timeout": "30m"}, [{"maxTimeout": "2h"}], "30m"),
        ({"timeout": "7d"}, [{"maxTimeout": "2h"}], "2h"),
        ({"timeout": "7d"}, [{"maxTimeout": "2h"}, {"maxTimeout": "45m"}], "45m"),
        ({}, [{"defaultTimeout": "45m"}, {"defaultTimeout": "15m"}], "15m"),
        ({}, [{"defaultTimeout": "45m"}, {"maxTimeout": "30m"}], "30m"),
        ({}, [{"maxTimeout": "30m"}], "30m"),
        ({"timeout": "3h"}, [{"defaultTimeout": "15m", "maxTimeout": "1d"}], "3h"),
        ({"timeout": "no-such"}, [{"defaultTimeout": "15m"}], "15m"),
    ],
)
def test_timeout_is_the_requesters_or_the_smallest_default_cut_to_every_max(
    asked: dict[str, Any], policies: list[dict[str, Any]], expected: str
) -> None:
    objects = [cluster(f"p{i}", {"require": r}) for i, r in enumerate(policies)]
    effective = decide(*objects, request=facts(**asked)).effective
    assert format_duration(effective.timeout) == expected


def test_notify_is_the_union_of_every_channel_and_the_requesters_own() -> None:
    first = cluster("a", {"require": {"notify": {"slack": ["C2", "C1"]}}})
    second = cluster("b", {"require": {"notify": {"slack": ["C1"], "teams": ["19:t@thread.v2"]}}})
    request = facts(notify={"slack": {"channel": "C9"}})
    assert decide(first, second, request=request).effective.notify == Notify(
        ("C1", "C2", "C9"), ("19:t@thread.v2",)
    )


def test_reminders_are_the_shortest_every() -> None:
    effective = decide(
        cluster("a", {"reminders": {"every": "1h"}}),
        cluster("b", {"reminders": {"every": "15m"}}),
        cluster("c", {}),
    ).effective
    assert effective.reminders_every == timedelta(minutes=15)


def test_escalation_keeps_every_sources_steps_in_time_order() -> None:
    cluster_steps = cluster(
        "oncall", {"escalation": [{"after": "1h", "mention": {"slackUserGroups": ["S0ONCALL"]}}]}
    )
    team_steps = namespaced(
        "payments",
        "team",
        {
            "escalation": [
                {"after": "10m", "notify": {"slack": ["CTEAM"]}},
                {"after": "1h", "notify": {"slack": ["CLEADS"]}},
            ]
        },
    )
    assert decide(cluster_steps, team_steps).effective.escalation == (
        EscalationStep(timedelta(minutes=10), Notify(("CTEAM",))),
        EscalationStep(timedelta(hours=1), Notify(("CLEADS",)), Mention(("S0ONCALL",))),
    )


def test_escalation_beyond_its_bound_folds_into_the_last_step() -> None:
    objects = [
        cluster(
            f"p{i:02d}", {"escalation": [{"after": f"{i + 1}m", "notify": {"slack": [f"C{i}"]}}]}
        )
        for i in range(MAX_EFFECTIVE_STEPS + 3)
    ]
    steps = decide(*objects).effective.escalation
    assert len(steps) == MAX_EFFECTIVE_STEPS
    assert steps[-1].after == timedelta(minutes=MAX_EFFECTIVE_STEPS)
    assert set(steps[-1].notify.slack) == {f"C{i}" for i in range(MAX_EFFECTIVE_STEPS - 1, 13)}


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (["AutoApprove"], Outcome.AUTO_APPROVE),
        (["AutoApprove", "AutoApprove"], Outcome.AUTO_APPROVE),
        (["AutoApprove", "RequireApproval"], Outcome.REQUIRE_APPROVAL),
        (["AutoApprove", "Refuse"], Outcome.REFUSE),
        (["RequireApproval", "Refuse"], Outcome.REFUSE),
        ([], Outcome.REQUIRE_APPROVAL),
    ],
)
def test_refuse_wins_over_require_approval_over_auto_approve(
    outcomes: list[str], expected: Outcome
) -> None:
    objects = [
        cluster(f"p{i}", {"outcome": o, **({"message": "no"} if o == "Refuse" else {})})
        for i, o in enumerate(outcomes)
    ]
    decision = decide(*objects)
    assert decision.outcome is expected
    assert decision.effective.outcome is expected


@pytest.mark.parametrize(
    "asked",
    [{"policy": {"requiredApprovals": 2}}, {"policy": {"approvers": {"groups": ["sre"]}}}],
)
def test_a_requester_asking_for_more_than_the_defaults_is_not_auto_approved(
    asked: dict[str, Any],
) -> None:
    preview = cluster(
        "preview", {"match": {"actions": ["pulumi preview"]}, "outcome": "AutoApprove"}
    )
    assert decide(preview, request=facts(action="pulumi preview")).outcome is Outcome.AUTO_APPROVE
    decision = decide(preview, request=facts(action="pulumi preview", **asked))
    assert decision.outcome is Outcome.REQUIRE_APPROVAL


def test_a_refusal_names_every_refusing_policy_and_its_message() -> None:
    decision = decide(
        cluster("no-db", {"outcome": "Refuse", "message": "databases are deleted by DBAs"}),
        cluster("freeze", {"outcome": "Refuse"}),
        cluster("ok", {}),
    )
    assert decision.outcome is Outcome.REFUSE
    assert decision.refusal_message == (
        "refused by ClusterApprovalPolicy/freeze; "
        "refused by ClusterApprovalPolicy/no-db: databases are deleted by DBAs"
    )


LOOSENING = [
    (
        "approvals",
        {"policy": {"requiredApprovals": 1}},
        {"approvals": 3},
        lambda e: e.required_approvals == 3,
    ),
    (
        "timeout",
        {"timeout": "7d"},
        {"maxTimeout": "30m"},
        lambda e: e.timeout == timedelta(minutes=30),
    ),
    (
        "approvers",
        {"policy": {"approvers": {"users": ["mallory"]}}},
        {"approvers": {"groups": ["sre"]}},
        lambda e: not e.admits("mallory", []) and not e.admits("bob", ["sre"]),
    ),
    (
        "from-groups",
        {"policy": {"requiredApprovals": 5}},
        {"fromGroups": [{"group": "sre", "count": 2}]},
        lambda e: e.required_approvals == 5 and e.from_groups == (GroupQuorum("sre", 2),),
    ),
    (
        "notify",
        {"notify": {"slack": {"channel": "CQUIET"}}},
        {"notify": {"slack": ["CSEC"]}},
        lambda e: "CSEC" in e.notify.slack,
    ),
]


@pytest.mark.parametrize(
    ("rule", "asked", "require", "strict"), LOOSENING, ids=[case[0] for case in LOOSENING]
)
def test_a_requester_trying_to_loosen_a_rule_gets_the_strict_one(
    rule: str, asked: dict[str, Any], require: dict[str, Any], strict: Any
) -> None:
    effective = decide(cluster("platform", {"require": require}), request=facts(**asked)).effective
    assert strict(effective), rule


def test_malformed_requester_values_read_as_defaults_not_as_errors() -> None:
    request = facts(
        policy={"requiredApprovals": "ten", "approvers": {"users": "alice"}},
        timeout=5,
        notify={"slack": "C1"},
    )
    effective = decide(request=request).effective
    assert (effective.required_approvals, effective.approvers, effective.timeout) == (
        1,
        (),
        timedelta(hours=1),
    )


# --- governed namespaces ----------------------------------------------------------------------

GOVERN = cluster(
    "prod-governed",
    {
        "match": {"namespaces": {"matchLabels": {"env": "prod"}}, "actions": ["pulumi *"]},
        "governNamespaces": True,
    },
)


def test_in_a_governed_namespace_a_request_no_cluster_policy_matches_is_refused() -> None:
    decision = decide(GOVERN, request=facts(action="terraform destroy"))
    assert decision.outcome is Outcome.REFUSE
    assert decision.unmatched_in_governed_namespace
    assert decision.sources == ("ClusterApprovalPolicy/prod-governed@1",)
    assert decision.refusal_message.startswith(
        "no ClusterApprovalPolicy matches action 'terraform destroy' on target 'production' in "
        "namespace 'payments', which ClusterApprovalPolicy/prod-governed governs"
    )


def test_in_a_governed_namespace_a_matched_request_proceeds() -> None:
    decision = decide(GOVERN, request=facts(action="pulumi up"))
    assert decision.outcome is Outcome.REQUIRE_APPROVAL
    assert not decision.unmatched_in_governed_namespace


def test_a_namespaced_policy_does_not_satisfy_a_governed_namespace() -> None:
    team = namespaced("payments", "anything", {"match": {"actions": ["*"]}})
    decision = decide(GOVERN, team, request=facts(action="terraform destroy"))
    assert decision.unmatched_in_governed_namespace


def test_outside_the_governed_namespaces_unmatched_requests_keep_their_own_rules() -> None:
    decision = decide(GOVERN, request=facts(action="terraform destroy", labels={"env": "dev"}))
    assert decision.outcome is Outcome.REQUIRE_APPROVAL
    assert decision.sources == ()


def test_more_policies_than_status_can_hold_refuse_the_request() -> None:
    objects = [cluster(f"p{i:02d}", {}) for i in range(MAX_MATCHING + 1)]
    decision = decide(*objects)
    assert decision.outcome is Outcome.REFUSE
    assert decision.refusal_message.startswith(f"{MAX_MATCHING + 1} policies apply to this")
    assert len(decision.sources) == MAX_MATCHING


# --- status.policy ----------------------------------------------------------------------------

FULL = EffectivePolicy(
    outcome=Outcome.REQUIRE_APPROVAL,
    required_approvals=2,
    approvers=(ApproverSet(("alice",), ("sre",), "ClusterApprovalPolicy/prod@7"),),
    from_groups=(GroupQuorum("sre", 2),),
    timeout=timedelta(days=2),
    notify=Notify(("C1",), ("19:t@thread.tacv2",)),
    reminders_every=timedelta(minutes=15),
    escalation=(
        EscalationStep(timedelta(hours=24), Notify(("C2",)), Mention(("S0ONCALL",), ("oncall",))),
    ),
    sources=("ClusterApprovalPolicy/prod@7",),
)


def test_status_policy_has_a_fixed_shape_and_reads_back() -> None:
    data = FULL.to_json()
    assert data == {
        "outcome": "RequireApproval",
        "requiredApprovals": 2,
        "approvers": [
            {"users": ["alice"], "groups": ["sre"], "from": "ClusterApprovalPolicy/prod@7"}
        ],
        "fromGroups": [{"group": "sre", "count": 2}],
        "timeout": "2d",
        "notify": {"slack": ["C1"], "teams": ["19:t@thread.tacv2"]},
        "reminders": {"every": "15m"},
        "escalation": [
            {
                "after": "24h",
                "notify": {"slack": ["C2"], "teams": []},
                "mention": {"slackUserGroups": ["S0ONCALL"], "teamsTags": ["oncall"]},
            }
        ],
        "from": ["ClusterApprovalPolicy/prod@7"],
    }
    assert list(data) == [
        "outcome",
        "requiredApprovals",
        "approvers",
        "fromGroups",
        "timeout",
        "notify",
        "reminders",
        "escalation",
        "from",
    ]
    assert EffectivePolicy.from_json(data) == FULL
    assert EffectivePolicy.from_json(EffectivePolicy().to_json()) == EffectivePolicy()


def test_status_policy_with_keys_missing_reads_their_defaults() -> None:
    assert EffectivePolicy.from_json({}) == EffectivePolicy()
    assert EffectivePolicy.from_json({"requiredApprovals": 3}).required_approvals == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"requiredApprovals": "2"}, "status.policy.requiredApprovals: must be an integer"),
        ({"outcome": "Yes"}, "status.policy.outcome: 'Yes' is not an outcome"),
        ({"approvers": {"users": []}}, "status.policy.approvers: must be a list"),
        ({"approvers": [{"users": "alice"}]}, "status.policy.approvers[0].users: must be a list"),
        ({"fromGroups": [{"group": "sre"}]}, "status.policy.fromGroups[0].count: must be an int"),
        ({"timeout": "forever"}, "status.policy.timeout: timeout 'forever' is not a duration"),
        ({"reminders": {"every": 15}}, "status.policy.reminders.every: must be a string"),
        (
            {"escalation": [{"after": "1h", "mention": []}]},
            "status.policy.escalation[0].mention: must be an object",
        ),
        ({"from": [1]}, "status.policy.from[0]: must be a string"),
    ],
)
def test_status_policy_of_the_wrong_type_is_refused_naming_the_key(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        EffectivePolicy.from_json(data)


def test_durations_format_as_the_parsers_read_them() -> None:
    for text in ("1m", "1m30s", "1h30m", "36h", "2d", "7d"):
        assert format_duration(parse_timeout(text)) == text
    assert format_duration(timedelta(days=1), days=False) == "24h"
    with pytest.raises(ValueError, match="every '1d' is not a duration like 15m"):
        parse_duration(
            "1d", "every", minimum=timedelta(minutes=1), maximum=timedelta(days=1), days=False
        )


# --- deciding under the effective policy ------------------------------------------------------

SRE_TWO = combine(
    [
        compile_policy(
            cluster(
                "prod", {"require": {"approvals": 2, "fromGroups": [{"group": "sre", "count": 2}]}}
            )
        )
    ],
    {"action": "a", "target": "t"},
)


def test_from_groups_quorum_needs_enough_distinct_approvers_in_the_group() -> None:
    assert SRE_TWO.required_approvals == 2
    assert not quorum_met(SRE_TWO, [("alice", ["sre"]), ("bob", ["dev"])])
    assert not quorum_met(SRE_TWO, [("alice", ["sre"]), ("Alice", ["sre"])])  # one person
    assert quorum_met(SRE_TWO, [("alice", ["sre"]), ("bob", ["dev"]), ("carol", ["sre"])])


def test_quorum_counts_only_approvers_every_set_admits() -> None:
    effective = combine(
        [
            compile_policy(
                cluster("p", {"require": {"approvals": 2, "approvers": {"groups": ["sre"]}}})
            )
        ],
        {},
    )
    assert not quorum_met(effective, [("alice", ["sre"]), ("mallory", ["dev"])])
    assert quorum_met(effective, [("alice", ["sre"]), ("bob", ["sre"])])


def test_a_compiled_policy_names_itself_for_status() -> None:
    policy = CompiledPolicy(PolicyKind.NAMESPACED, "own", "payments", "12")
    assert policy.ref == "ApprovalPolicy/payments/own"
    assert policy.source == "ApprovalPolicy/payments/own@12"


def test_a_policy_listing_admits_its_spellings_only_for_a_canonical_decider() -> None:
    listed = ApproverSet(users=("Alice ",), source="ClusterApprovalPolicy/prod")

    assert listed.admits("alice", [])
    assert not listed.admits("ALICE", [])  # another Kubernetes account
    assert not listed.admits("\uff41lice", [])
    assert ApproverSet(users=("ALICE",)).admits("ALICE", [])  # listed as it is spelled
