"""Plans Greenlight reads itself: counts, the resources destroyed, and what is refused and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import planfixtures as pf
from tests.support.planfixtures import Resource

from greenlight.core.model import Phase
from greenlight.core.plans import (
    FORMATS,
    MAX_DESTROYED,
    MAX_NAME_CHARS,
    MAX_PLAN_CHARS,
    MAX_RESOURCE_TYPES,
    PULUMI,
    TERRAFORM,
    PlanError,
    PlanReading,
    read_plan,
)
from greenlight.core.request import Request, Spec, Status

CRD = Path(__file__).resolve().parents[2] / "crds" / "greenlight.dev_approvalrequests.yaml"


def terraform(resources: list[Resource], **options: Any) -> PlanReading:
    reading = read_plan(TERRAFORM, pf.terraform_json(pf.terraform_plan(resources, **options)))
    assert reading is not None
    return reading


def pulumi(resources: list[Resource], **options: Any) -> PlanReading:
    reading = read_plan(PULUMI, pf.pulumi_json(pf.pulumi_preview(resources, **options)))
    assert reading is not None
    return reading


def counts(reading: PlanReading) -> dict[str, int]:
    return {
        "creates": reading.creates,
        "updates": reading.updates,
        "deletes": reading.deletes,
        "replaces": reading.replaces,
    }


def refusal(format: str, document: Any) -> PlanError:
    text = document if isinstance(document, str) else json.dumps(document, indent=2)
    with pytest.raises(PlanError) as caught:
        read_plan(format, text)
    return caught.value


SMALL = [
    Resource("create", "aws_s3_bucket", "logs"),
    Resource("update", "aws_iam_role", "deployer"),
    Resource("delete", "aws_db_instance", "main"),
    Resource("replace", "aws_instance", "web", index=0),
    Resource("replace", "aws_instance", "web", index=1, create_before_destroy=True),
    Resource("no-op", "aws_kms_key", "state"),
    Resource("read", "aws_ami", "ubuntu"),
]


# -- text ----------------------------------------------------------------------------------------


def test_a_text_plan_is_shown_but_not_read() -> None:
    assert read_plan("text", "Plan: 1 to add, 0 to change, 12 to destroy.") is None


def test_an_unknown_format_is_refused_naming_the_field_and_the_formats() -> None:
    error = refusal("yaml", "{}")

    assert str(error).startswith('spec.plan.format "yaml" is not one Greenlight reads')
    assert all(name in str(error) for name in FORMATS)


# -- Terraform -----------------------------------------------------------------------------------


def test_terraform_changes_are_counted_once_each() -> None:
    reading = terraform(SMALL)

    assert counts(reading) == {"creates": 1, "updates": 1, "deletes": 1, "replaces": 2}
    assert reading.format == TERRAFORM
    assert reading.destroyed == (
        "aws_db_instance.main",
        "aws_instance.web[0]",
        "aws_instance.web[1]",
    )
    assert reading.resource_types == (
        "aws_db_instance",
        "aws_iam_role",
        "aws_instance",
        "aws_s3_bucket",
    )
    assert not reading.truncated


def test_terraform_replace_is_one_replace_whichever_goes_first() -> None:
    destroy_first = terraform([Resource("replace", "aws_instance", "web")])
    create_first = terraform(
        [Resource("replace", "aws_instance", "web", create_before_destroy=True)]
    )

    for reading in (destroy_first, create_first):
        assert counts(reading) == {"creates": 0, "updates": 0, "deletes": 0, "replaces": 1}
        assert reading.destroyed == ("aws_instance.web",)


def test_terraform_data_sources_no_ops_drift_and_outputs_are_not_counted() -> None:
    reading = terraform(
        [Resource("read", "aws_ami", "ubuntu"), Resource("no-op", "aws_kms_key", "state")],
        drift=[
            Resource("delete", "aws_s3_bucket", "gone"),
            Resource("update", "aws_iam_role", "x"),
        ],
    )

    assert counts(reading) == dict.fromkeys(("creates", "updates", "deletes", "replaces"), 0)
    assert reading.destroyed == ()
    assert reading.resource_types == ()
    assert reading.headline() == "no changes"


def test_terraform_a_plan_without_changes_omits_resource_changes() -> None:
    plan = pf.terraform_plan([])
    del plan["resource_changes"]

    reading = read_plan(TERRAFORM, pf.terraform_json(plan))

    assert reading == PlanReading(format=TERRAFORM)


def test_terraform_a_deposed_object_that_is_deleted_is_listed_as_such() -> None:
    reading = terraform([Resource("delete", "aws_instance", "web", deposed="0badf00d")])

    assert reading.deletes == 1
    assert reading.destroyed == ("aws_instance.web (deposed object 0badf00d)",)


def test_terraform_forget_destroys_nothing() -> None:
    plan = pf.terraform_plan(
        [Resource("delete", "aws_s3_bucket", "kept"), Resource("replace", "aws_instance", "web")]
    )
    plan["resource_changes"][0]["change"]["actions"] = ["forget"]
    plan["resource_changes"][1]["change"]["actions"] = ["create", "forget"]

    reading = read_plan(TERRAFORM, pf.terraform_json(plan))

    assert reading is not None
    assert counts(reading) == {"creates": 1, "updates": 0, "deletes": 0, "replaces": 0}
    assert reading.destroyed == ()


def test_terraform_addresses_in_modules_and_with_keys_are_listed_whole() -> None:
    reading = terraform(
        [Resource("delete", "aws_s3_bucket", "logs", module="module.eu", index="a")]
    )

    assert reading.destroyed == ('module.eu.aws_s3_bucket.logs["a"]',)


def test_terraform_format_version_2_is_refused() -> None:
    error = refusal(TERRAFORM, pf.terraform_plan(SMALL, format_version="2.0"))

    assert error.path == "format_version"
    assert '"2.0"' in str(error)


def test_terraform_a_state_is_not_a_plan() -> None:
    state = {"format_version": "1.0", "terraform_version": "1.9.8", "values": {}}

    error = refusal(TERRAFORM, state)

    assert "neither resource_changes nor planned_values" in str(error)


def test_terraform_a_plan_that_errored_is_refused() -> None:
    error = refusal(TERRAFORM, pf.terraform_plan(SMALL, errored=True))

    assert error.path == "errored"
    assert "incomplete" in str(error)


def test_terraform_an_unknown_action_is_refused_at_its_path() -> None:
    plan = pf.terraform_plan(SMALL)
    plan["resource_changes"][2]["change"]["actions"] = ["delete", "obliterate"]

    error = refusal(TERRAFORM, plan)

    assert error.path == "resource_changes[2].change.actions[1]"
    assert '"obliterate"' in str(error)


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda p: p.update(resource_changes={"a": 1}), "resource_changes"),
        (lambda p: p["resource_changes"].__setitem__(1, "x"), "resource_changes[1]"),
        (lambda p: p["resource_changes"][1].pop("change"), "resource_changes[1].change"),
        (lambda p: p["resource_changes"][1]["change"].update(actions=[]), "resource_changes[1]"),
        (lambda p: p["resource_changes"][2].update(address=7), "resource_changes[2].address"),
        (lambda p: p["resource_changes"][2].pop("type"), "resource_changes[2].type"),
        (lambda p: p["resource_changes"][2].update(mode=None), "resource_changes[2].mode"),
    ],
)
def test_terraform_a_value_of_the_wrong_shape_is_refused_at_its_path(edit: Any, path: str) -> None:
    plan = pf.terraform_plan(SMALL)
    edit(plan)

    error = refusal(TERRAFORM, plan)

    assert error.path.startswith(path)
    assert f"at {error.path}:" in str(error)


# -- Pulumi --------------------------------------------------------------------------------------

PULUMI_SMALL = [
    Resource("create", "aws:s3/bucket:Bucket", "logs"),
    Resource("update", "aws:iam/role:Role", "deployer"),
    Resource("delete", "aws:rds/instance:Instance", "main"),
    Resource("replace", "aws:ec2/instance:Instance", "web-0"),
    Resource("replace", "aws:ec2/instance:Instance", "web-1", create_before_destroy=True),
    Resource("no-op", "aws:kms/key:Key", "state"),
    Resource("read", "aws:ec2/vpc:Vpc", "shared"),
]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"replacement_steps": True},
        {"show_sames": True},
        {"replacement_steps": True, "show_sames": True},
    ],
    ids=["default", "replacement-steps", "sames", "both"],
)
def test_pulumi_steps_are_counted_once_per_resource(options: dict[str, bool]) -> None:
    reading = pulumi(PULUMI_SMALL, **options)

    assert counts(reading) == {"creates": 1, "updates": 1, "deletes": 1, "replaces": 2}
    assert reading.destroyed == (
        "aws:rds/instance:Instance::main",
        "aws:ec2/instance:Instance::web-0",
        "aws:ec2/instance:Instance::web-1",
    )
    assert reading.resource_types == (
        "aws:ec2/instance:Instance",
        "aws:iam/role:Role",
        "aws:rds/instance:Instance",
        "aws:s3/bucket:Bucket",
    )


def test_pulumi_replacement_steps_alone_are_one_replace() -> None:
    web = Resource("replace", "aws:ec2/instance:Instance", "web")
    preview = pf.pulumi_preview([])
    preview["steps"] += [
        pf.pulumi_step("create-replacement", web.urn, web.type, old=web, new=web),
        pf.pulumi_step("delete-replaced", web.urn, web.type, old=web),
    ]

    reading = read_plan(PULUMI, pf.pulumi_json(preview))

    assert reading is not None
    assert counts(reading) == {"creates": 0, "updates": 0, "deletes": 0, "replaces": 1}
    assert reading.destroyed == ("aws:ec2/instance:Instance::web",)


def test_pulumi_names_come_from_the_urn_without_the_parent_type() -> None:
    reading = pulumi(
        [
            Resource("delete", "aws:s3/bucket:Bucket", "logs", parent_type="shop:index:Service"),
            Resource("delete", "aws:s3/bucket:Bucket", "odd::name"),
        ]
    )

    assert reading.destroyed == ("aws:s3/bucket:Bucket::logs", "aws:s3/bucket:Bucket::odd::name")
    assert reading.resource_types == ("aws:s3/bucket:Bucket",)


def test_pulumi_sames_reads_and_the_stack_are_not_counted() -> None:
    reading = pulumi(
        [Resource("no-op", "aws:kms/key:Key", "k"), Resource("read", "aws:ec2/vpc:Vpc", "v")],
        show_sames=True,
    )

    assert reading == PlanReading(format=PULUMI)


def test_pulumi_a_failed_preview_is_refused_with_its_error() -> None:
    failed = {"severity": "error", "message": "aws:s3:Bucket logs: AccessDenied"}
    warned = {"severity": "warning", "message": "deprecated"}

    error = refusal(PULUMI, pf.pulumi_preview(PULUMI_SMALL, diagnostics=[warned, failed]))

    assert error.path == "diagnostics[1]"
    assert "AccessDenied" in str(error)
    assert pulumi(PULUMI_SMALL, diagnostics=[warned]).deletes == 1


@pytest.mark.parametrize("cut", ["all steps", "the delete step"])
def test_pulumi_a_summary_of_more_destruction_than_the_steps_show_is_refused(cut: str) -> None:
    preview = pf.pulumi_preview(PULUMI_SMALL)
    if cut == "all steps":
        del preview["steps"]
    else:
        preview["steps"] = [s for s in preview["steps"] if s["op"] != "delete"]

    error = refusal(PULUMI, preview)

    assert error.path == "changeSummary"
    assert "steps are missing" in str(error)


def test_pulumi_a_preview_of_no_changes_reads_as_none() -> None:
    assert pulumi([]) == PlanReading(format=PULUMI)
    assert read_plan(PULUMI, '{"changeSummary": {"same": 4}}') == PlanReading(format=PULUMI)


@pytest.mark.parametrize(
    ("step", "path", "said"),
    [
        ({"op": "obliterate", "urn": "urn:pulumi:s::p::t::n"}, "steps[1].op", '"obliterate"'),
        ({"op": "delete"}, "steps[1].urn", "missing"),
        ({"op": "delete", "urn": "aws:s3:Bucket::logs"}, "steps[1].urn", "not a Pulumi URN"),
        ({"op": "delete", "urn": "urn:pulumi:s::p::::n"}, "steps[1].urn", "not a Pulumi URN"),
        ("delete", "steps[1]", "expected an object"),
    ],
)
def test_pulumi_a_step_of_the_wrong_shape_is_refused_at_its_path(
    step: Any, path: str, said: str
) -> None:
    preview = pf.pulumi_preview([])
    preview["steps"].append(step)

    error = refusal(PULUMI, preview)

    assert error.path == path
    assert said in str(error)


def test_pulumi_json_that_is_not_a_preview_is_refused() -> None:
    assert refusal(PULUMI, {"resources": []}).path == "the top level"
    assert refusal(PULUMI, []).path == "the top level"


# -- JSON that is not JSON -----------------------------------------------------------------------


def test_a_syntax_error_names_the_field_the_format_and_where() -> None:
    text = pf.terraform_json(pf.terraform_plan(SMALL)).replace(',"mode"', ' "mode"', 1)
    pretty = '{\n  "steps": [\n    {"op": "create",}\n  ]\n}'

    terraform_error = refusal(TERRAFORM, text)
    pulumi_error = refusal(PULUMI, pretty)

    column = text.index(' "mode"') + 2  # where the comma should have been, 1-based
    assert str(terraform_error) == (
        f"spec.plan.details is not a terraform-plan-json plan at line 1, column {column}: "
        "Expecting ',' delimiter; give the output of `terraform show -json PLANFILE`, or set "
        "spec.plan.format to text"
    )
    assert (pulumi_error.line, pulumi_error.column) == (3, 21)
    assert "pulumi preview --json" in str(pulumi_error)


@pytest.mark.parametrize(
    ("text", "said", "where"),
    [
        ("", "it is empty", (None, None)),
        ('{"a": [1, 2]', "Expecting ',' delimiter", (1, 13)),
        ('{"a": "[[[",\n "b": NaN}', "NaN is not a JSON value", (2, 7)),
        ('{"a": -Infinity}', "-Infinity is not a JSON value", (1, 7)),
        (
            '{"id": "' + "9" * 5000 + '",\n "n": ' + "9" * 5000 + "}",
            "more than 4300 digits",
            (2, 7),
        ),
        ("[" * 100_000, "nested too deeply", (1, 201)),
        ('{"steps": []} trailing', "Extra data", (1, 15)),
    ],
)
def test_what_is_not_json_is_refused_with_its_position(
    text: str, said: str, where: tuple[int | None, int | None]
) -> None:
    error = refusal(PULUMI, text)

    assert said in str(error)
    assert (error.line, error.column) == where


def test_details_above_the_bound_are_refused_before_parsing() -> None:
    error = refusal(TERRAFORM, " " * (MAX_PLAN_CHARS + 1))

    assert f"more than the {MAX_PLAN_CHARS}" in str(error)


# -- bounds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("format", [TERRAFORM, PULUMI])
def test_a_plan_of_5000_resources_is_read_whole_and_shown_bounded(format: str) -> None:
    resources = pf.mixed_resources(5000, pulumi=format == PULUMI, types=70)
    reading = terraform(resources) if format == TERRAFORM else pulumi(resources)

    assert counts(reading) == pf.expected_counts(resources)
    destroyed = [r for r in resources if r.change == "delete"]
    destroyed += [r for r in resources if r.change == "replace"]
    assert reading.destroyed == tuple(r.destroyed_name for r in destroyed[:MAX_DESTROYED])
    assert len(reading.resource_types) == MAX_RESOURCE_TYPES
    assert list(reading.resource_types) == sorted(reading.resource_types)
    assert reading.truncated


def test_destroyed_lists_deletes_before_replaces() -> None:
    resources = [Resource("replace", "aws_instance", f"r{n}") for n in range(60)]
    resources.append(Resource("delete", "aws_db_instance", "main"))

    reading = terraform(resources)

    assert reading.destroyed[0] == "aws_db_instance.main"
    assert len(reading.destroyed) == MAX_DESTROYED
    assert reading.truncated


def test_when_types_are_cut_the_types_of_destroyed_resources_are_kept() -> None:
    resources = [Resource("create", f"aws_a{n:02}", "x") for n in range(70)]
    resources.append(Resource("delete", "aws_zz_database", "main"))

    reading = terraform(resources)

    assert "aws_zz_database" in reading.resource_types
    assert len(reading.resource_types) == MAX_RESOURCE_TYPES
    assert reading.truncated


def test_names_are_cut_and_invisible_characters_shown() -> None:
    long = "x" * 1000
    plan = pf.terraform_plan([Resource("delete", "aws_s3_bucket", long)])
    plan["resource_changes"][0]["address"] = "aws_s3_bucket.a\u202eb\n== Approved ==\ud800"

    reading = read_plan(TERRAFORM, pf.terraform_json(plan))
    cut = terraform([Resource("delete", "aws_s3_bucket", long)])

    assert reading is not None
    assert reading.destroyed == ("aws_s3_bucket.a\ufffdb\ufffd== Approved ==\ufffd",)
    assert len(cut.destroyed[0]) == MAX_NAME_CHARS
    assert cut.destroyed[0].endswith("\u2026")


def test_the_headline_puts_destruction_first() -> None:
    assert terraform(SMALL).headline() == "1 to delete, 2 to replace, 1 to create, 1 to update"


# -- status.plan ---------------------------------------------------------------------------------


def test_status_plan_round_trips_in_the_crd_shape() -> None:
    reading = terraform(SMALL)

    data = reading.to_json()

    assert data == {
        "format": TERRAFORM,
        "creates": 1,
        "updates": 1,
        "deletes": 1,
        "replaces": 2,
        "destroyed": ["aws_db_instance.main", "aws_instance.web[0]", "aws_instance.web[1]"],
        "resourceTypes": ["aws_db_instance", "aws_iam_role", "aws_instance", "aws_s3_bucket"],
        "truncated": False,
    }
    assert PlanReading.from_json(json.loads(json.dumps(data))) == reading


def test_status_plan_read_back_is_bounded_again() -> None:
    data = terraform(SMALL).to_json() | {"destroyed": ["x" * 300] * 80}

    reading = PlanReading.from_json(data)

    assert len(reading.destroyed) == MAX_DESTROYED
    assert {len(name) for name in reading.destroyed} == {MAX_NAME_CHARS}
    assert reading.truncated


def test_the_status_carries_the_reading_and_the_spec_its_format() -> None:
    reading = terraform(SMALL)
    status = Status(phase=Phase.PENDING, requested_by="ci", plan=reading)
    obj = {
        "metadata": {"name": "apr-1", "uid": "u", "creationTimestamp": "2030-01-01T00:00:00Z"},
        "spec": {
            "action": "terraform apply",
            "target": "production",
            "requester": {"workflowId": "wf-1"},
            "plan": {"format": TERRAFORM, "details": "{}"},
        },
        "status": json.loads(json.dumps(status.to_json())),
    }

    request = Request.parse(obj, b"key")

    assert request.spec.plan_format == TERRAFORM
    assert request.status.plan == reading
    assert Status.from_json({"phase": "Pending"}).plan is None
    assert "plan" not in Status(phase=Phase.PENDING).to_json()
    assert Spec.from_json({"plan": {"summary": "s"}}).plan_format == "text"


def test_the_crd_admits_the_formats_and_bounds_status_plan_as_read() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    spec_format = schema["spec"]["properties"]["plan"]["properties"]["format"]
    status_plan = schema["status"]["properties"]["plan"]

    assert spec_format["enum"] == list(FORMATS)
    assert spec_format["default"] == "text"
    assert set(status_plan["properties"]) == set(PlanReading(format=TERRAFORM).to_json())
    assert status_plan["properties"]["format"]["enum"] == [PULUMI, TERRAFORM]
    for key, bound in (("destroyed", MAX_DESTROYED), ("resourceTypes", MAX_RESOURCE_TYPES)):
        assert status_plan["properties"][key]["maxItems"] == bound
        assert status_plan["properties"][key]["items"]["maxLength"] == MAX_NAME_CHARS
