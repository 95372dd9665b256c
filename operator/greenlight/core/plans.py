"""Plans Greenlight reads itself: `pulumi preview --json` and `terraform show -json` output
turned into counts and the resources an action destroys (`status.plan`).

`read_plan(format, details)` is the one entry point. It reads only what the tools publish as
their machine-readable formats (Terraform's "JSON Output Format", Pulumi's preview digest),
counts each resource once, and keeps the lists people see bounded (MAX_DESTROYED,
MAX_RESOURCE_TYPES, MAX_NAME_CHARS) however large the plan. What it refuses it refuses with a
`PlanError` that names `spec.plan.details`, the format, and where the problem is: the line and
column of a JSON syntax error, or the JSON path of a value of the wrong shape. docs/plans.md
says what is read from which field, and why.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

TEXT = "text"
PULUMI = "pulumi-preview-json"
TERRAFORM = "terraform-plan-json"
FORMATS = (TEXT, PULUMI, TERRAFORM)

MAX_DESTROYED = 50  # entries in `destroyed`
MAX_RESOURCE_TYPES = 50  # entries in `resource_types`
MAX_NAME_CHARS = 256  # characters in one entry of either list
# The most read_plan reads, whoever calls it: above the tools' output for 5,000 resources
# (about 6.5 MB from terraform, 10.5 MB from pulumi with --show-sames). An ApprovalRequest
# carries far less (the CRD bounds spec.plan.details to 262144 characters), so in the operator
# the CRD's bound is the one that holds.
MAX_PLAN_CHARS = 16 * 1024 * 1024

FIELD = "spec.plan.details"
_ELLIPSIS = "\u2026"
_REPLACEMENT_CHAR = "\ufffd"
_HINTS = {
    TERRAFORM: "give the output of `terraform show -json PLANFILE`",
    PULUMI: "give the output of `pulumi preview --json`",
}


@dataclass(frozen=True)
class PlanReading:
    """Greenlight's own reading of a machine-readable plan (`status.plan`)."""

    format: str  # "pulumi-preview-json" | "terraform-plan-json"
    creates: int = 0
    updates: int = 0
    deletes: int = 0
    replaces: int = 0
    destroyed: tuple[str, ...] = ()  # resources deleted or replaced, bounded
    resource_types: tuple[str, ...] = ()  # distinct types, bounded
    truncated: bool = False  # a list above was cut at its bound

    @property
    def destroys(self) -> int:
        """How many existing resources the plan destroys: each delete and each replace."""
        return self.deletes + self.replaces

    def headline(self) -> str:
        """The counts in one line, destruction first: "2 to delete, 1 to replace, ..."."""
        if not (self.creates or self.updates or self.deletes or self.replaces):
            return "no changes"
        return (
            f"{self.deletes} to delete, {self.replaces} to replace, "
            f"{self.creates} to create, {self.updates} to update"
        )

    def to_json(self) -> dict[str, Any]:
        """`status.plan` as the CRD's schema has it."""
        return {
            "format": self.format,
            "creates": self.creates,
            "updates": self.updates,
            "deletes": self.deletes,
            "replaces": self.replaces,
            "destroyed": list(self.destroyed),
            "resourceTypes": list(self.resource_types),
            "truncated": self.truncated,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanReading:
        """Read `status.plan` as written by `to_json` (the bounds hold again on the way in)."""
        destroyed = [str(name) for name in data.get("destroyed") or ()]
        types = [str(name) for name in data.get("resourceTypes") or ()]
        return cls(
            format=str(data.get("format") or ""),
            creates=int(data.get("creates") or 0),
            updates=int(data.get("updates") or 0),
            deletes=int(data.get("deletes") or 0),
            replaces=int(data.get("replaces") or 0),
            destroyed=tuple(_shown(name) for name in destroyed[:MAX_DESTROYED]),
            resource_types=tuple(_shown(name) for name in types[:MAX_RESOURCE_TYPES]),
            truncated=bool(data.get("truncated"))
            or len(destroyed) > MAX_DESTROYED
            or len(types) > MAX_RESOURCE_TYPES,
        )


class PlanError(ValueError):
    """`spec.plan.details` is not a plan in `spec.plan.format`.

    `line`/`column` (1-based) locate a JSON syntax problem; `path` (e.g.
    `resource_changes[3].change.actions`) locates a value of the wrong shape. The message says
    all of it and what to give instead.
    """

    def __init__(
        self,
        format: str,
        problem: str,
        *,
        path: str = "",
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.format = format
        self.problem = problem
        self.path = path
        self.line = line
        self.column = column
        super().__init__(self._message())

    def _message(self) -> str:
        if self.format not in _HINTS:
            return (
                f"spec.plan.format {_quoted(self.format)} is not one Greenlight reads: "
                f"use one of {', '.join(FORMATS)}"
            )
        where = ""
        if self.line is not None:
            where = f" at line {self.line}, column {self.column}"
        elif self.path:
            where = f" at {self.path}"
        return (
            f"{FIELD} is not a {self.format} plan{where}: {self.problem}; "
            f"{_HINTS[self.format]}, or set spec.plan.format to {TEXT}"
        )


def read_plan(format: str, details: str) -> PlanReading | None:
    """Greenlight's reading of `details` (spec.plan.details) in `format` (spec.plan.format);
    None for `text`, which Greenlight shows but does not read.

    Raises PlanError for a format Greenlight does not know, for details that are not JSON, and
    for JSON that is not a plan of that tool. Time and memory grow linearly with the input,
    which is refused above MAX_PLAN_CHARS; the reading itself is bounded.
    """
    if format == TEXT:
        return None
    reader = _READERS.get(format)
    if reader is None:
        raise PlanError(format, "unknown format")
    return reader(_Reader(format), _load(format, details))


# -- JSON --------------------------------------------------------------------------------------


class _NotJSON(Exception):
    """A token the JSON grammar does not have (NaN, Infinity), met inside json.loads."""


# A JSON string, so that what looks like a token inside one is not taken for one.
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_DEEP = 200  # a nesting depth that real plans do not reach (they stay well under 40)


def _load(format: str, details: str) -> Any:
    if len(details) > MAX_PLAN_CHARS:
        raise PlanError(
            format,
            f"it has {len(details)} characters, more than the {MAX_PLAN_CHARS} Greenlight reads",
        )
    if not details.strip():
        raise PlanError(format, "it is empty")
    try:
        return json.loads(details, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise PlanError(format, exc.msg, line=exc.lineno, column=exc.colno) from None
    except _NotJSON as exc:
        problem = f"{exc} is not a JSON value"
        offset = _find(details, re.escape(str(exc)))
    except RecursionError:
        problem = "arrays and objects are nested too deeply"
        offset = _find_deep(details)
    except ValueError:  # Python's bound on the digits of an integer (sys.int_info)
        digits = sys.get_int_max_str_digits()
        problem = f"an integer has more than {digits} digits"
        offset = _find(details, rf"(?<![0-9.eE+-])-?[0-9]{{{digits + 1},}}(?![0-9.eE])")
    if offset is None:
        raise PlanError(format, problem)
    line = details.count("\n", 0, offset) + 1
    raise PlanError(format, problem, line=line, column=offset - details.rfind("\n", 0, offset))


def _constant(name: str) -> Any:
    raise _NotJSON(name)


def _find(details: str, token: str) -> int | None:
    """Where `token` first occurs outside strings: where json.loads stopped, which it does not
    say itself (everything before that is valid JSON, so strings there are closed)."""
    for match in re.finditer(f"{_STRING}|{token}", details):
        if not match.group().startswith('"'):
            return match.start()
    return None


def _find_deep(details: str) -> int | None:
    """Where an array or object first opens deeper than _DEEP levels, outside strings."""
    depth = 0
    for match in re.finditer(rf"{_STRING}|[\[\]{{}}]", details):
        bracket = match.group()
        if bracket in ("]", "}"):
            depth -= 1
        elif bracket in ("[", "{"):
            depth += 1
            if depth > _DEEP:
                return match.start()
    return None


# -- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reader:
    """Typed access to the parsed document: a value of the wrong shape is a PlanError naming
    its path."""

    format: str

    def refuse(self, path: str, problem: str) -> PlanError:
        return PlanError(self.format, problem, path=path or "the top level")

    def object(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.refuse(path, f"expected an object, got {_kind(value)}")
        return value

    def array(self, value: Any, path: str) -> list[Any]:
        """A list; absent (null) is the empty list, as both tools omit empty lists."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.refuse(path, f"expected an array, got {_kind(value)}")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.refuse(path, f"expected a string, got {_kind(value)}")
        return value


@dataclass
class _Tally:
    """Counts, and the bounded lists, built one counted resource at a time."""

    creates: int = 0
    updates: int = 0
    deletes: int = 0
    replaces: int = 0
    deleted: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    types: dict[str, bool] = field(default_factory=dict)  # type -> destroyed one of them

    def count(self, change: str, kind: str, name: str) -> None:
        """One resource named `name`, of type `kind`, with `change` (create, update, delete or
        replace)."""
        destroys = change in ("delete", "replace")
        if change == "create":
            self.creates += 1
        elif change == "update":
            self.updates += 1
        elif change == "delete":
            self.deletes += 1
            if len(self.deleted) < MAX_DESTROYED:
                self.deleted.append(_shown(name))
        else:
            self.replaces += 1
            if len(self.replaced) < MAX_DESTROYED:
                self.replaced.append(_shown(name))
        shown = _shown(kind)
        self.types[shown] = self.types.get(shown, False) or destroys

    def reading(self, format: str) -> PlanReading:
        """Deleted resources are listed before replaced ones: when the list is cut, what is
        lost for good is what stays in it. When types are cut, destroyed ones are kept first."""
        destroyed = (self.deleted + self.replaced)[:MAX_DESTROYED]
        kept = sorted(self.types, key=lambda kind: (not self.types[kind], kind))
        return PlanReading(
            format=format,
            creates=self.creates,
            updates=self.updates,
            deletes=self.deletes,
            replaces=self.replaces,
            destroyed=tuple(destroyed),
            resource_types=tuple(sorted(kept[:MAX_RESOURCE_TYPES])),
            truncated=len(destroyed) < self.deletes + self.replaces
            or len(kept) > MAX_RESOURCE_TYPES,
        )


# Terraform: one entry of `resource_changes` per resource instance object, with the actions
# documented for `change.actions`. Replace is ["delete", "create"] (destroy before create) or
# ["create", "delete"] (create before destroy); ["create", "forget"] creates a new object and
# leaves the old one in place (`destroy = false`), so it is a create.
_TERRAFORM_ACTIONS = frozenset({"no-op", "create", "read", "update", "delete", "forget"})
_FORMAT_VERSION = re.compile(r"([0-9]+)\.[0-9]+")


def _terraform(reader: _Reader, document: Any) -> PlanReading:
    plan = reader.object(document, "")
    version = reader.string(plan.get("format_version"), "format_version")
    major = _FORMAT_VERSION.fullmatch(version)
    if major is None or major.group(1) not in ("0", "1"):
        raise reader.refuse(
            "format_version", f"version {_quoted(version)} is not one Greenlight reads (0.x, 1.x)"
        )
    if "resource_changes" not in plan and "planned_values" not in plan:
        raise reader.refuse(
            "",
            "it has neither resource_changes nor planned_values (is it the JSON of a state?)",
        )
    if plan.get("errored") is True:
        raise reader.refuse(
            "errored", "Terraform reports that planning failed, so the plan is incomplete"
        )
    tally = _Tally()
    for index, item in enumerate(reader.array(plan.get("resource_changes"), "resource_changes")):
        at = f"resource_changes[{index}]"
        entry = reader.object(item, at)
        change = _terraform_change(reader, entry, at)
        if change is None:
            continue
        address = reader.string(entry.get("address"), f"{at}.address")
        kind = reader.string(entry.get("type"), f"{at}.type")
        if entry.get("deposed") is not None:
            address += f" (deposed object {reader.string(entry['deposed'], f'{at}.deposed')})"
        tally.count(change, kind, address)
    return tally.reading(TERRAFORM)


def _terraform_change(reader: _Reader, entry: Mapping[str, Any], at: str) -> str | None:
    """What Greenlight counts this entry as; None for data sources and no-op/read/forget."""
    mode = reader.string(entry.get("mode", "managed"), f"{at}.mode")
    change = reader.object(entry.get("change"), f"{at}.change")
    path = f"{at}.change.actions"
    actions = reader.array(change.get("actions"), path)
    if not actions:
        raise reader.refuse(path, "expected at least one action")
    for step, action in enumerate(actions):
        if reader.string(action, f"{path}[{step}]") not in _TERRAFORM_ACTIONS:
            raise reader.refuse(
                f"{path}[{step}]",
                f"unknown action {_quoted(action)} (Greenlight reads "
                f"{', '.join(sorted(_TERRAFORM_ACTIONS))})",
            )
    if mode != "managed":
        return None
    if "delete" in actions:
        return "replace" if "create" in actions else "delete"
    if "create" in actions:
        return "create"
    if "update" in actions:
        return "update"
    return None


# Pulumi: steps name a resource by URN; one resource can have several steps (a replacement is
# `replace`, plus `create-replacement` and `delete-replaced` with --show-replacement-steps).
# Steps are grouped by URN, so each resource is counted once.
_PULUMI_REPLACEMENT = frozenset(
    {"replace", "create-replacement", "delete-replaced", "import-replacement"}
)
_PULUMI_UNCOUNTED = frozenset(
    {
        "same",
        "read",
        "read-replacement",
        "refresh",
        "discard",
        "discard-replaced",
        "remove-pending-replace",
        "import",
        "diff",
    }
)
_PULUMI_OPS = _PULUMI_REPLACEMENT | _PULUMI_UNCOUNTED | {"create", "update", "delete"}
_URN_PREFIX = "urn:pulumi:"


def _pulumi(reader: _Reader, document: Any) -> PlanReading:
    preview = reader.object(document, "")
    if "steps" not in preview and "changeSummary" not in preview:
        raise reader.refuse("", "it has neither steps nor changeSummary")
    for index, item in enumerate(reader.array(preview.get("diagnostics"), "diagnostics")):
        diagnostic = reader.object(item, f"diagnostics[{index}]")
        if diagnostic.get("severity") == "error":
            message = diagnostic.get("message")
            said = f": {_quoted(message, 200)}" if isinstance(message, str) else ""
            raise reader.refuse(
                f"diagnostics[{index}]",
                f"the preview failed{said}, so it is incomplete",
            )
    ops: dict[str, set[str]] = {}
    for index, item in enumerate(reader.array(preview.get("steps"), "steps")):
        step = reader.object(item, f"steps[{index}]")
        op = reader.string(step.get("op"), f"steps[{index}].op")
        if op not in _PULUMI_OPS:
            raise reader.refuse(
                f"steps[{index}].op",
                f"unknown op {_quoted(op)} (Greenlight reads {', '.join(sorted(_PULUMI_OPS))})",
            )
        urn = reader.string(step.get("urn"), f"steps[{index}].urn")
        if _urn_parts(urn) is None:
            raise reader.refuse(
                f"steps[{index}].urn",
                f"{_quoted(urn)} is not a Pulumi URN (urn:pulumi:STACK::PROJECT::TYPE::NAME)",
            )
        ops.setdefault(urn, set()).add(op)
    tally = _Tally()
    for urn, done in ops.items():
        change = _pulumi_change(done)
        if change is not None:
            kind, name = _urn_parts(urn) or ("", "")
            tally.count(change, kind, f"{kind}::{name}")
    _check_summary(reader, preview, tally)
    return tally.reading(PULUMI)


def _pulumi_change(ops: set[str]) -> str | None:
    if ops & _PULUMI_REPLACEMENT or {"create", "delete"} <= ops:
        return "replace"
    for change in ("delete", "create", "update"):
        if change in ops:
            return change
    return None


def _urn_parts(urn: str) -> tuple[str, str] | None:
    """(type, name) of `urn:pulumi:STACK::PROJECT::[PARENT$]TYPE::NAME`; the name may itself
    contain "::"."""
    if not urn.startswith(_URN_PREFIX):
        return None
    parts = urn[len(_URN_PREFIX) :].split("::", 3)
    if len(parts) != 4:
        return None
    kind = parts[2].rsplit("$", 1)[-1]
    return (kind, parts[3]) if kind and parts[3] else None


def _check_summary(reader: _Reader, preview: Mapping[str, Any], tally: _Tally) -> None:
    """Pulumi's own count of deletes and replaces must not exceed what the steps show: if it
    does, steps were cut off, and what is missing is what destroys."""
    if preview.get("changeSummary") is None:
        return
    summary = reader.object(preview["changeSummary"], "changeSummary")
    reported: float = 0
    for op in ("delete", "replace"):
        value = summary.get(op, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise reader.refuse(f"changeSummary.{op}", f"expected a number, got {_kind(value)}")
        reported += value
    if reported > tally.deletes + tally.replaces:
        raise reader.refuse(
            "changeSummary",
            "it reports more resources deleted or replaced than the steps show "
            f"({tally.deletes + tally.replaces}): steps are missing",
        )


_READERS: dict[str, Callable[[_Reader, Any], PlanReading]] = {
    TERRAFORM: _terraform,
    PULUMI: _pulumi,
}


# -- text people see ---------------------------------------------------------------------------


def _shown(text: str) -> str:
    """`text` safe to show: invisible and control characters replaced, at most
    MAX_NAME_CHARS characters ("…" marks a cut)."""
    if len(text) > MAX_NAME_CHARS:
        text = text[: MAX_NAME_CHARS - 1] + _ELLIPSIS
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _REPLACEMENT_CHAR for c in text)


def _quoted(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > limit:
        text = text[: limit - 1] + _ELLIPSIS
    return '"' + _shown(text) + '"'


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (missing or null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
