"""Plans as the tools print them, generated, for tests of Greenlight's own reading of plans.

`terraform_plan` builds what `terraform show -json PLANFILE` prints (Terraform's JSON Output
Format: `format_version`, `planned_values`, `resource_changes[].change.actions`, `prior_state`,
`configuration`, ...); `pulumi_preview` builds what `pulumi preview --json` prints (`steps[]`
with `op`, `urn`, `oldState`/`newState`, and `changeSummary`). Both take `Resource`s that say
what happens to each resource, so a test states a plan and the reading it expects side by side.
`mixed_resources` makes thousands of them for the large plans.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# What happens to one resource: a change Greenlight counts, or one it does not ("no-op" is
# Terraform's ["no-op"] and Pulumi's `same`; "read" is a Terraform data source or a Pulumi read).
COUNTED = ("create", "update", "delete", "replace")
CHANGES = (*COUNTED, "no-op", "read")

TERRAFORM_VERSION = "1.9.8"
TERRAFORM_PROVIDER = "registry.terraform.io/hashicorp/aws"
STACK, PROJECT = "production", "shop"
STACK_URN = f"urn:pulumi:{STACK}::{PROJECT}::pulumi:pulumi:Stack::{PROJECT}-{STACK}"
PULUMI_PROVIDER = f"urn:pulumi:{STACK}::{PROJECT}::pulumi:providers:aws::default_6_59_0"

# Real resource types of each tool, the same services in the same order.
TERRAFORM_TYPES = (
    "aws_s3_bucket",
    "aws_iam_role",
    "aws_db_instance",
    "aws_instance",
    "aws_security_group",
    "aws_lambda_function",
    "aws_sqs_queue",
    "aws_sns_topic",
    "aws_dynamodb_table",
    "aws_route53_record",
    "aws_cloudwatch_log_group",
    "aws_kms_key",
)
PULUMI_TYPES = (
    "aws:s3/bucket:Bucket",
    "aws:iam/role:Role",
    "aws:rds/instance:Instance",
    "aws:ec2/instance:Instance",
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:lambda/function:Function",
    "aws:sqs/queue:Queue",
    "aws:sns/topic:Topic",
    "aws:dynamodb/table:Table",
    "aws:route53/record:Record",
    "aws:cloudwatch/logGroup:LogGroup",
    "aws:kms/key:Key",
)


@dataclass(frozen=True)
class Resource:
    """One resource of a plan and what the plan does to it."""

    change: str  # one of CHANGES
    type: str  # "aws_s3_bucket" (Terraform) or "aws:s3/bucket:Bucket" (Pulumi)
    name: str
    module: str = ""  # Terraform: "module.storage"
    index: int | str | None = None  # Terraform: count index or for_each key
    create_before_destroy: bool = False  # the order of a replace
    deposed: str = ""  # Terraform: the key of a deposed object (a left-over of a replace)
    parent_type: str = ""  # Pulumi: the type of the component resource it belongs to

    @property
    def address(self) -> str:
        """Terraform's absolute address, e.g. `module.storage.aws_s3_bucket.logs["eu"]`."""
        local = ("data." if self.change == "read" else "") + f"{self.type}.{self.name}"
        if isinstance(self.index, int):
            local += f"[{self.index}]"
        elif isinstance(self.index, str):
            local += f"[{json.dumps(self.index)}]"
        return f"{self.module}.{local}" if self.module else local

    @property
    def urn(self) -> str:
        kind = f"{self.parent_type}${self.type}" if self.parent_type else self.type
        return f"urn:pulumi:{STACK}::{PROJECT}::{kind}::{self.name}"

    @property
    def destroyed_name(self) -> str:
        """How Greenlight lists this resource when the plan destroys it."""
        if ":" in self.type:
            return f"{self.type}::{self.name}"
        return f"{self.address} (deposed object {self.deposed})" if self.deposed else self.address


def expected_counts(resources: Iterable[Resource]) -> dict[str, int]:
    """What Greenlight should count: {"creates": n, "updates": n, "deletes": n, "replaces": n}."""
    counts = Counter(r.change for r in resources)
    return {f"{change}s": counts[change] for change in COUNTED}


def mixed_resources(count: int, *, pulumi: bool = False, types: int = 12) -> list[Resource]:
    """`count` resources in a fixed mix (per 20: 6 create, 4 update, 3 delete, 3 replace half
    of each order, 3 no-op, 1 read), over `types` distinct types (beyond the 12 real ones, more
    are made up in the same style), some in modules or components, some with indexes."""
    mix = ["create"] * 6 + ["update"] * 4 + ["delete"] * 3 + ["replace"] * 3 + ["no-op"] * 3
    mix.append("read")
    resources = []
    for n in range(count):
        change = mix[n % len(mix)]
        resources.append(
            Resource(
                change=change,
                type=resource_type(n % types, pulumi=pulumi),
                name=f"r{n}",
                module=f"module.team{n % 7}" if not pulumi and n % 3 == 0 else "",
                index=n % 4 if not pulumi and n % 5 == 0 else None,
                create_before_destroy=change == "replace" and n % 2 == 0,
                parent_type="shop:index:Service" if pulumi and n % 4 == 0 else "",
            )
        )
    return resources


def resource_type(n: int, *, pulumi: bool) -> str:
    """The `n`th resource type of a tool: a real one first, then made-up ones in their style."""
    real = PULUMI_TYPES if pulumi else TERRAFORM_TYPES
    if n < len(real):
        return real[n]
    return f"aws:service{n}/widget:Widget" if pulumi else f"aws_service{n}_widget"


# -- Terraform: `terraform show -json PLANFILE` -------------------------------------------------

_TERRAFORM_ACTIONS: dict[str, list[str]] = {
    "create": ["create"],
    "update": ["update"],
    "delete": ["delete"],
    "no-op": ["no-op"],
    "read": ["read"],
}
_ACTION_REASONS = {
    "delete": "delete_because_no_resource_config",
    "replace": "replace_because_cannot_update",
}


def terraform_plan(
    resources: Sequence[Resource],
    *,
    drift: Sequence[Resource] = (),
    format_version: str = "1.2",
    errored: bool = False,
) -> dict[str, Any]:
    """The plan `terraform show -json` prints for a saved plan that does `resources`;
    `drift` are changes made outside Terraform (`resource_drift`)."""
    existing = [r for r in resources if r.change not in ("create", "read") and not r.deposed]
    planned = [r for r in resources if r.change not in ("delete", "read") and not r.deposed]
    return {
        "format_version": format_version,
        "terraform_version": TERRAFORM_VERSION,
        "variables": {"region": {"value": "eu-west-1"}},
        "planned_values": {"root_module": _terraform_module(planned, after=True)},
        "resource_drift": [_terraform_change(r) for r in drift],
        "resource_changes": [_terraform_change(r) for r in resources],
        "output_changes": {
            "bucket_count": {
                "actions": ["update"],
                "before": 3,
                "after": 4,
                "after_unknown": False,
                "before_sensitive": False,
                "after_sensitive": False,
            }
        },
        "prior_state": {
            "format_version": format_version,
            "terraform_version": TERRAFORM_VERSION,
            "values": {"root_module": _terraform_module(existing, after=False)},
        },
        "configuration": _terraform_configuration(resources),
        "relevant_attributes": [
            {"resource": r.address, "attribute": ["tags"]} for r in resources[:3]
        ],
        "timestamp": "2030-01-02T03:04:05Z",
        "applyable": True,
        "complete": True,
        "errored": errored,
    }


def terraform_json(plan: dict[str, Any]) -> str:
    """As terraform prints it: one line."""
    return json.dumps(plan, separators=(",", ":"))


def _terraform_change(resource: Resource) -> dict[str, Any]:
    change = resource.change
    if change == "replace":
        actions = ["create", "delete"] if resource.create_before_destroy else ["delete", "create"]
    else:
        actions = _TERRAFORM_ACTIONS[change]
    before = None if change in ("create", "read") else _attributes(resource, after=False)
    after = None if change == "delete" else _attributes(resource, after=True)
    unknown = {"id": True, "arn": True} if change in ("create", "replace") else {}
    entry: dict[str, Any] = {
        "address": resource.address,
        "mode": "data" if change == "read" else "managed",
        "type": resource.type,
        "name": resource.name,
        "provider_name": TERRAFORM_PROVIDER,
        "change": {
            "actions": actions,
            "before": before,
            "after": after,
            "after_unknown": unknown,
            "before_sensitive": False if before is None else {"tags": {}},
            "after_sensitive": False if after is None else {"tags": {}},
        },
    }
    if resource.module:
        entry["module_address"] = resource.module
    if resource.index is not None:
        entry["index"] = resource.index
    if resource.deposed:
        entry["deposed"] = resource.deposed
    if change == "replace":
        entry["change"]["replace_paths"] = [["name"]]
    if change in _ACTION_REASONS:
        entry["action_reason"] = _ACTION_REASONS[change]
    return entry


def _terraform_module(resources: Sequence[Resource], *, after: bool) -> dict[str, Any]:
    """A values representation: root resources, and one child module per module address."""
    modules: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        value = {
            "address": r.address,
            "mode": "managed",
            "type": r.type,
            "name": r.name,
            "provider_name": TERRAFORM_PROVIDER,
            "schema_version": 0,
            "values": _attributes(r, after=after),
            "sensitive_values": {"tags": {}},
        }
        if r.index is not None:
            value["index"] = r.index
        modules.setdefault(r.module, []).append(value)
    root: dict[str, Any] = {"resources": modules.pop("", [])}
    if modules:
        root["child_modules"] = [
            {"address": address, "resources": values} for address, values in modules.items()
        ]
    return root


def _terraform_configuration(resources: Sequence[Resource]) -> dict[str, Any]:
    """One resource block per type and name, as `configuration` has it (not per instance)."""
    blocks = {(r.module, r.type, r.name, r.change == "read") for r in resources}
    root = [
        {
            "address": f"{'data.' if data else ''}{kind}.{name}",
            "mode": "data" if data else "managed",
            "type": kind,
            "name": name,
            "provider_config_key": "aws",
            "expressions": {"tags": {"constant_value": {"team": "payments"}}},
            "schema_version": 0,
        }
        for module, kind, name, data in sorted(blocks)
        if not module
    ]
    return {
        "provider_config": {
            "aws": {
                "name": "aws",
                "full_name": TERRAFORM_PROVIDER,
                "expressions": {"region": {"references": ["var.region"]}},
            }
        },
        "root_module": {"resources": root, "variables": {"region": {"default": "eu-west-1"}}},
    }


def _attributes(resource: Resource, *, after: bool) -> dict[str, Any]:
    version = "v2" if after and resource.change in ("update", "replace") else "v1"
    return {
        "id": f"{resource.name}-0123456789abcdef",
        "arn": f"arn:aws:{resource.type}:eu-west-1:123456789012:{resource.name}",
        "name": f"{resource.name}-{version}",
        "tags": {"team": "payments", "env": STACK, "revision": version},
    }


# -- Pulumi: `pulumi preview --json` ------------------------------------------------------------

_PULUMI_OPS = {"create": "create", "update": "update", "delete": "delete", "read": "read"}


def pulumi_preview(
    resources: Sequence[Resource],
    *,
    replacement_steps: bool = False,
    show_sames: bool = False,
    diagnostics: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The digest `pulumi preview --json` prints for an update that does `resources`.

    As Pulumi does: the root stack's step is always there; `same` steps only with
    `show_sames` (--show-sames); a replacement is one `replace` step, plus `create-replacement`
    and `delete-replaced` with `replacement_steps` (--show-replacement-steps), the deletion
    last unless the resource is deleted before it is replaced."""
    steps: list[dict[str, Any]] = [pulumi_step("same", STACK_URN, "pulumi:pulumi:Stack")]
    deletions_last: list[dict[str, Any]] = []
    for r in resources:
        if r.change == "no-op":
            if show_sames:
                steps.append(pulumi_step("same", r.urn, r.type, old=r, new=r))
        elif r.change != "replace":
            old = r if r.change in ("update", "delete") else None
            new = r if r.change != "delete" else None
            steps.append(pulumi_step(_PULUMI_OPS[r.change], r.urn, r.type, old=old, new=new))
        elif not replacement_steps:
            steps.append(pulumi_step("replace", r.urn, r.type, old=r, new=r))
        else:
            create = pulumi_step("create-replacement", r.urn, r.type, old=r, new=r)
            replace = pulumi_step("replace", r.urn, r.type, old=r, new=r)
            delete = pulumi_step("delete-replaced", r.urn, r.type, old=r)
            if r.create_before_destroy:
                steps += [create, replace]
                deletions_last.append(delete)
            else:
                steps += [delete, replace, create]
    summary = Counter({"same": 1})  # the root stack
    summary.update("same" if r.change == "no-op" else r.change for r in resources)
    digest: dict[str, Any] = {
        "config": {"aws:region": "eu-west-1", f"{PROJECT}:replicas": "3"},
        "steps": steps + deletions_last,
        "duration": 4_217_000_000,
        "changeSummary": dict(summary),
    }
    if diagnostics:
        digest["diagnostics"] = list(diagnostics)
    return digest


def pulumi_json(preview: dict[str, Any]) -> str:
    """As pulumi prints it: indented by four spaces."""
    return json.dumps(preview, indent=4)


def pulumi_step(
    op: str,
    urn: str,
    kind: str,
    *,
    old: Resource | None = None,
    new: Resource | None = None,
) -> dict[str, Any]:
    """One entry of `steps`, with the states the op has."""
    step: dict[str, Any] = {"op": op, "urn": urn, "provider": PULUMI_PROVIDER + "::04da6b54"}
    if old is not None:
        step["oldState"] = _pulumi_state(urn, kind, old, after=False)
    if new is not None:
        step["newState"] = _pulumi_state(urn, kind, new, after=True)
    if op in ("update", "replace", "create-replacement"):
        step["diffReasons"] = ["tags"] if op == "update" else ["name"]
        step["detailedDiff"] = {
            key: {"kind": "update-replace" if op != "update" else "update", "inputDiff": True}
            for key in step["diffReasons"]
        }
    else:
        step["detailedDiff"] = None
    if op in ("replace", "create-replacement"):
        step["replaceReasons"] = ["name"]
    return step


def _pulumi_state(urn: str, kind: str, resource: Resource, *, after: bool) -> dict[str, Any]:
    version = "v2" if after and resource.change in ("update", "replace") else "v1"
    inputs = {"name": f"{resource.name}-{version}", "tags": {"team": "payments", "env": STACK}}
    state: dict[str, Any] = {
        "urn": urn,
        "custom": True,
        "type": kind,
        "inputs": inputs,
        "outputs": {**inputs, "arn": f"arn:aws:::{resource.name}"} if not after else {},
        "parent": STACK_URN,
        "provider": PULUMI_PROVIDER + "::04da6b54",
    }
    if not after or resource.change in ("update", "no-op"):
        state["id"] = f"{resource.name}-0123456789abcdef"
    if resource.change == "read":
        state["external"] = True
    return state
