"""Combining policies never loosens: one more matching policy, or a requester asking for
anything, can only keep or tighten what a request needs (core/policies.combine)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from greenlight.core.policies import (
    CompiledPolicy,
    EffectivePolicy,
    Outcome,
    combine,
    compile_policy,
)

GROUPS = st.sampled_from(["sre", "dba", "dev", "sec"])
USERS = st.sampled_from(["alice", "bob", "carol", "Alice", "mallory"])
TIMEOUTS = st.sampled_from(["1m", "15m", "30m", "1h", "2h", "1d", "3d", "7d", "90s"])
DEFAULTS = st.sampled_from(["1m", "90s", "15m", "30m", "1h"])
PEOPLE = st.lists(st.tuples(USERS, st.lists(GROUPS, max_size=3, unique=True)), max_size=6)
STRICTNESS = {Outcome.AUTO_APPROVE: 0, Outcome.REQUIRE_APPROVAL: 1, Outcome.REFUSE: 2}


@st.composite
def requirements(draw: st.DrawFn) -> dict[str, Any]:
    require: dict[str, Any] = {}
    if draw(st.booleans()):
        require["approvals"] = draw(st.integers(1, 10))
    if draw(st.booleans()):
        require["approvers"] = {
            "users": draw(st.lists(USERS, max_size=3, unique=True)),
            "groups": draw(st.lists(GROUPS, max_size=2, unique=True)),
        }
    if draw(st.booleans()):
        groups = draw(st.lists(GROUPS, min_size=1, max_size=3, unique=True))
        require["fromGroups"] = [{"group": g, "count": draw(st.integers(1, 4))} for g in groups]
    maximum = draw(st.one_of(st.none(), TIMEOUTS))
    if maximum is not None:
        require["maxTimeout"] = maximum
    default = draw(st.one_of(st.none(), DEFAULTS))
    if default is not None and (maximum is None or _seconds(default) <= _seconds(maximum)):
        require["defaultTimeout"] = default
    if draw(st.booleans()):
        require["notify"] = {
            "slack": draw(st.lists(st.sampled_from(["C1", "C2", "C3"]), max_size=2, unique=True))
        }
    return require


@st.composite
def policies(draw: st.DrawFn, name: str) -> CompiledPolicy:
    outcome = draw(st.sampled_from(list(Outcome)))
    spec: dict[str, Any] = {"outcome": outcome.value}
    if outcome is Outcome.REQUIRE_APPROVAL:
        spec["require"] = draw(requirements())
        if draw(st.booleans()):
            spec["reminders"] = {"every": draw(st.sampled_from(["5m", "15m", "1h"]))}
        if draw(st.booleans()):
            spec["escalation"] = [
                {"after": draw(st.sampled_from(["10m", "1h", "4h"])), "notify": {"slack": ["CESC"]}}
            ]
    obj = {
        "kind": "ClusterApprovalPolicy",
        "metadata": {"name": name, "resourceVersion": "1"},
        "spec": spec,
    }
    return compile_policy(obj)


@st.composite
def asks(draw: st.DrawFn) -> dict[str, Any]:
    """A requester's spec, including values the schema would refuse."""
    spec: dict[str, Any] = {"action": "pulumi up", "target": "production"}
    policy: dict[str, Any] = {}
    if draw(st.booleans()):
        policy["requiredApprovals"] = draw(st.one_of(st.integers(-3, 20), st.just("2")))
    if draw(st.booleans()):
        policy["approvers"] = {
            "users": draw(st.lists(USERS, max_size=2)),
            "groups": draw(st.lists(GROUPS, max_size=2)),
        }
    spec["policy"] = policy
    if draw(st.booleans()):
        spec["timeout"] = draw(st.one_of(TIMEOUTS, st.just("8d"), st.just("soon")))
    return spec


def _seconds(text: str) -> int:
    from greenlight.core.durations import parse_timeout

    return int(parse_timeout(text).total_seconds())


def never_looser(before: EffectivePolicy, after: EffectivePolicy, people: Any) -> None:
    assert after.required_approvals >= before.required_approvals
    assert after.timeout <= before.timeout
    for user, groups in people:  # the people who may decide never grow
        assert not after.admits(user, groups) or before.admits(user, groups)
    needs = {q.group: q.count for q in after.from_groups}
    for quorum in before.from_groups:
        assert needs.get(quorum.group, 0) >= quorum.count
    assert set(before.notify.slack) <= set(after.notify.slack)
    if before.reminders_every is not None:
        assert after.reminders_every is not None
        assert after.reminders_every <= before.reminders_every
    if before.escalation:
        assert after.escalation[0].after <= before.escalation[0].after


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 10**6), min_size=0, max_size=4).flatmap(
        lambda ids: st.tuples(*(policies(f"p{i}") for i in range(len(ids))))
    ),
    policies("extra"),
    asks(),
    PEOPLE,
)
def test_one_more_matching_policy_never_loosens(
    existing: tuple[CompiledPolicy, ...], extra: CompiledPolicy, spec: dict[str, Any], people: Any
) -> None:
    before = combine(existing, spec)
    after = combine((*existing, extra), spec)
    never_looser(before, after, people)
    if existing:  # from no policy at all, an AutoApprove policy is what approves
        assert STRICTNESS[after.outcome] >= STRICTNESS[before.outcome]


@settings(max_examples=300, deadline=None)
@given(st.lists(policies("p"), min_size=1, max_size=4), asks())
def test_the_requester_never_gets_less_than_every_policy_requires(
    matching: list[CompiledPolicy], spec: dict[str, Any]
) -> None:
    effective = combine(matching, spec)
    for policy in matching:
        require = policy.require
        if require.approvals is not None:
            assert effective.required_approvals >= require.approvals
        if require.max_timeout is not None:
            assert effective.timeout <= require.max_timeout
        if policy.outcome is Outcome.REFUSE:
            assert effective.outcome is Outcome.REFUSE
    assert 1 <= effective.required_approvals <= 10
    assert EffectivePolicy.from_json(effective.to_json()) == effective
