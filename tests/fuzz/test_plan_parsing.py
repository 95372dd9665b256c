"""Property tests of Greenlight's reading of plans: whatever spec.plan.details holds, the reading
is bounded or the refusal is a PlanError that says where; and a plan the tools could print is
counted exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support import planfixtures as pf
from tests.support.planfixtures import Resource

from greenlight.core.plans import (
    MAX_DESTROYED,
    MAX_NAME_CHARS,
    MAX_RESOURCE_TYPES,
    PULUMI,
    TERRAFORM,
    PlanError,
    PlanReading,
    read_plan,
)

FORMATS = st.sampled_from([TERRAFORM, PULUMI])
SLOW_TO_DRAW = [HealthCheck.too_slow, HealthCheck.data_too_large]  # plans are large examples
KEYS = st.sampled_from(
    [
        "format_version",
        "resource_changes",
        "planned_values",
        "errored",
        "address",
        "mode",
        "type",
        "change",
        "actions",
        "deposed",
        "steps",
        "op",
        "urn",
        "changeSummary",
        "diagnostics",
        "severity",
        "create",
        "delete",
    ]
)
WORDS = st.sampled_from(
    [
        "1.2",
        "2.0",
        "managed",
        "data",
        "create",
        "update",
        "delete",
        "replace",
        "no-op",
        "read",
        "forget",
        "same",
        "create-replacement",
        "delete-replaced",
        "error",
        "urn:pulumi:s::p::aws:s3/bucket:Bucket::b",
        "urn:pulumi:s::p::t",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    WORDS,
    st.text(max_size=30),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), inner, max_size=6),
    ),
    max_leaves=40,
)


def assert_bounded(reading: PlanReading | None, format: str) -> None:
    assert reading is not None
    assert reading.format == format
    assert min(reading.creates, reading.updates, reading.deletes, reading.replaces) >= 0
    assert len(reading.destroyed) <= min(MAX_DESTROYED, reading.deletes + reading.replaces)
    assert len(reading.resource_types) <= MAX_RESOURCE_TYPES
    assert list(reading.resource_types) == sorted(set(reading.resource_types))
    for name in (*reading.destroyed, *reading.resource_types):
        assert len(name) <= MAX_NAME_CHARS
        assert name.isprintable()
    assert PlanReading.from_json(json.loads(json.dumps(reading.to_json()))) == reading


def read(format: str, details: str) -> PlanReading | None:
    """read_plan, allowing only its own refusal, which must name the field and the format."""
    reading, refused = None, None
    try:
        reading = read_plan(format, details)
    except PlanError as error:
        refused = str(error)
    if refused is not None:
        assert refused.startswith(f"spec.plan.details is not a {format} plan")
        assert len(refused) < 1000
        return None
    assert_bounded(reading, format)
    return reading


@settings(max_examples=300, deadline=None)
@given(format=FORMATS, document=JSON)
def test_any_json_is_read_bounded_or_refused(format: str, document: Any) -> None:
    read(format, json.dumps(document))


@settings(max_examples=300, deadline=None)
@given(format=FORMATS, text=st.text(max_size=200))
def test_any_text_is_read_bounded_or_refused(format: str, text: str) -> None:
    read(format, text)


@settings(max_examples=200, deadline=None, suppress_health_check=SLOW_TO_DRAW)
@given(format=FORMATS, data=st.data())
def test_a_plan_with_one_value_replaced_is_read_bounded_or_refused(
    format: str, data: st.DataObject
) -> None:
    resources = pf.mixed_resources(12, pulumi=format == PULUMI)
    plan = pf.terraform_plan(resources) if format == TERRAFORM else pf.pulumi_preview(resources)
    node: Any = plan
    while True:  # walk down to a random value and replace it
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        if not isinstance(node[key], dict | list) or data.draw(st.booleans()):
            node[key] = data.draw(JSON)
            break
        node = node[key]

    read(format, json.dumps(plan))


@settings(max_examples=100, deadline=None)
@given(format=FORMATS, text=st.text(alphabet='[]{}",:0-9eE.tfnaulrs \n\\', max_size=300))
def test_broken_json_is_refused_with_a_position(format: str, text: str) -> None:
    try:
        json.loads(text)
    except ValueError:
        pass
    else:
        return
    with pytest.raises(PlanError) as caught:
        read_plan(format, text)
    assert caught.value.line is not None or caught.value.problem == "it is empty"


CHANGES = st.sampled_from(pf.CHANGES)


@st.composite
def plans_the_tools_print(draw: st.DrawFn) -> tuple[str, list[Resource], dict[str, bool]]:
    """Distinct resources with random changes, and the options the tool was run with."""
    format = draw(FORMATS)
    pulumi = format == PULUMI
    drawn = draw(st.lists(st.tuples(CHANGES, st.integers(0, 60), st.booleans()), max_size=80))
    resources = [
        Resource(
            change, pf.resource_type(kind, pulumi=pulumi), f"r{n}", create_before_destroy=first
        )
        for n, (change, kind, first) in enumerate(drawn)
    ]
    options = {"replacement_steps": draw(st.booleans()), "show_sames": draw(st.booleans())}
    return format, resources, options if pulumi else {}


@settings(max_examples=150, deadline=None, suppress_health_check=SLOW_TO_DRAW)
@given(case=plans_the_tools_print())
def test_a_plan_the_tools_print_is_counted_exactly(
    case: tuple[str, list[Resource], dict[str, bool]],
) -> None:
    format, resources, options = case
    if format == TERRAFORM:
        details = pf.terraform_json(pf.terraform_plan(resources))
    else:
        preview = pf.pulumi_preview(
            resources,
            replacement_steps=options["replacement_steps"],
            show_sames=options["show_sames"],
        )
        details = pf.pulumi_json(preview)

    reading = read_plan(format, details)

    assert_bounded(reading, format)
    assert reading is not None
    assert {
        "creates": reading.creates,
        "updates": reading.updates,
        "deletes": reading.deletes,
        "replaces": reading.replaces,
    } == pf.expected_counts(resources)
    destroyed = [r for r in resources if r.change == "delete"]
    destroyed += [r for r in resources if r.change == "replace"]
    assert reading.destroyed == tuple(r.destroyed_name for r in destroyed[:MAX_DESTROYED])
    assert reading.truncated == (
        len(destroyed) > MAX_DESTROYED
        or len({r.type for r in resources if r.change in pf.COUNTED}) > MAX_RESOURCE_TYPES
    )
