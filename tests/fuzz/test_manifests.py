"""Generated ApprovalRequest manifests against the real API server (CRD schema + CEL + webhooks).

Every invalid manifest is refused with HTTP 422 whose message names the offending field (never
a 500, never accepted); every valid one is accepted and becomes Pending under the operator.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.core.model import GROUP, KIND, PLURAL, VERSION
from greenlight.devcluster import ControlPlane

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_names = itertools.count()
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=60)
IDS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:/-]{0,40}\Z")
# What an action or target may be: printable words of any script, one space between them (no
# control, invisible or other space characters: the CRD's rule).
WORDS = st.lists(
    st.text(
        st.characters(
            codec="utf-8", exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"]
        ),
        min_size=1,
        max_size=12,
    ),
    min_size=1,
    max_size=5,
).map(" ".join)


def base_spec() -> dict[str, Any]:
    return {"action": "pulumi destroy", "target": "prod", "requester": {"workflowId": "wf-1"}}


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "action": draw(WORDS),
        "target": draw(WORDS),
        "requester": {"workflowId": draw(IDS)},
    }
    if draw(st.booleans()):
        spec["requester"]["taskId"] = draw(IDS)
    if draw(st.booleans()):
        spec["plan"] = {"summary": draw(TEXT), "details": draw(st.text(max_size=500))}
    if draw(st.booleans()):
        spec["timeout"] = draw(
            st.one_of(
                st.integers(1, 7).map(lambda d: f"{d}d"),
                st.integers(1, 168).map(lambda h: f"{h}h"),
                st.integers(1, 10080).map(lambda m: f"{m}m"),
                st.integers(60, 604800).map(lambda s: f"{s}s"),
            )
        )
    if draw(st.booleans()):
        users = draw(st.lists(st.sampled_from(["alice", "bob", "carol"]), unique=True))
        spec["policy"] = {
            "requiredApprovals": draw(st.integers(1, max(1, len(users)) if users else 10)),
            "approvers": {"users": users},
        }
    if draw(st.booleans()):
        spec["notify"] = {"slack": {"channel": draw(st.from_regex(r"\A#?[A-Za-z0-9._-]{1,40}\Z"))}}
    return spec


def _set(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    keys = path.split(".")[1:]
    node = spec
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return spec


def _drop(spec: dict[str, Any], path: str) -> dict[str, Any]:
    keys = path.split(".")[1:]
    node = spec
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]
    return spec


# (field the message must name, how to break it)
BREAKERS: list[tuple[str, st.SearchStrategy[Any]]] = [
    (
        "spec.action",
        st.one_of(
            st.just(""),
            st.text(min_size=257, max_size=300),
            st.integers(),
            WORDS.map(lambda w: w + "  x"),  # a doubled space
            WORDS.map(lambda w: "\u200b" + w),  # an invisible character
        ),
    ),
    (
        "spec.target",
        st.one_of(
            st.just(""),
            st.text(min_size=257, max_size=300),
            st.booleans(),
            WORDS.map(lambda w: w + " "),  # a trailing space
        ),
    ),
    (
        "spec.requester.workflowId",
        st.one_of(st.just(""), st.from_regex(r"\A[^A-Za-z0-9].{0,10}\Z"), st.integers()),
    ),
    ("spec.requester.taskId", st.from_regex(r"\A[ _.][a-z]{0,5}\Z")),
    (
        "spec.timeout",
        st.one_of(
            st.sampled_from(["", "0m", "59s", "8d", "169h", "abc", "1h-", "10080m1s", "0d"]),
            st.integers(),
            st.text(min_size=17, max_size=20),
        ),
    ),
    (
        "spec.policy.requiredApprovals",
        st.one_of(st.integers(max_value=0), st.integers(min_value=11), st.just("two")),
    ),
    ("spec.plan.details", st.just("x" * 262145)),
    ("spec.plan.summary", st.text(min_size=1025, max_size=1100)),
    ("spec.notify.slack.channel", st.one_of(st.just(""), st.from_regex(r"\A[ !@$%]{1,5}\Z"))),
    ("spec.policy.approvers.users", st.just(["alice", "alice"])),
    ("spec.requester", st.just("__drop__")),
    ("spec.action", st.just("__drop__")),
]


@st.composite
def invalid_specs(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    field, strategy = draw(st.sampled_from(BREAKERS))
    spec = base_spec()
    value = draw(strategy)
    if value == "__drop__":
        return _drop(spec, field), field
    return _set(spec, field, value), field


@pytest.fixture
def custom(control_plane: ControlPlane) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(control_plane.api_client())


def _create(api: client.CustomObjectsApi, namespace: str, spec: dict[str, Any]) -> str:
    name = f"fuzz-{next(_names)}-{time.monotonic_ns() % 100000}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": spec,
    }
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return name


@FUZZ
@given(case=invalid_specs())
def test_invalid_manifests_are_refused_with_422_naming_the_field(
    operator: OperatorProcess, people: People, custom: client.CustomObjectsApi, case: Any
) -> None:
    spec, field = case
    with pytest.raises(ApiException) as refused:
        _create(custom, people.namespace, spec)
    assert refused.value.status == 422, refused.value.body
    assert refused.value.body is not None
    message = json.loads(refused.value.body)["message"]
    assert field in message, f"{field} not named in: {message}"


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=valid_specs())
def test_valid_manifests_are_accepted_and_become_pending(
    operator: OperatorProcess, people: People, custom: client.CustomObjectsApi, spec: Any
) -> None:
    name = _create(custom, people.namespace, spec)
    deadline = time.monotonic() + 20
    while True:
        obj: Any = custom.get_namespaced_custom_object(
            GROUP, VERSION, people.namespace, PLURAL, name
        )
        status = obj.get("status") or {}
        if status.get("phase") == "Pending" and status.get("notifications"):
            break
        assert time.monotonic() < deadline, f"{name} stuck: {status}"
        time.sleep(0.05)
    assert status["expiresAt"]
    assert status["planDigest"].startswith("sha256:")
