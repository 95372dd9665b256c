"""Platform-owned approval policy: `ClusterApprovalPolicy` and `ApprovalPolicy` (docs/policy.md).

`compile_policy` turns one policy object, as the API server returns it, into a `CompiledPolicy`
(globs compiled, the CEL condition compiled and checked) or raises `PolicyError` naming the
field. A `PolicySet` holds the compiled policies of the cluster and answers, for one request
about to be created, which policies match and what they require together (`PolicyDecision`).

Combination is "strictest wins", and the requester can only tighten:

- outcome: Refuse over RequireApproval over AutoApprove; AutoApprove only when every matching
  policy says AutoApprove and the requester asked for nothing beyond the defaults (one approval,
  no approvers listed);
- approvals: the largest of the requester's `requiredApprovals`, every `require.approvals` and
  every `fromGroups` count;
- approvers: every source that lists approvers restricts; a person may decide only when every
  restricting set lists them by user name or by group (`EffectivePolicy.admits`);
- fromGroups: the union, the largest count per group;
- timeout: the requester's (or, when they gave none, the smallest `defaultTimeout`, else 1h),
  cut to every `maxTimeout`;
- notify: the union of every channel; reminders: the shortest `every`; escalation: every step of
  every source, merged by time (docs/policy.md says why not only one source's steps).

Everything here is pure: no Kubernetes client, no I/O, the clock comes in as `RequestFacts.now`.
"""

from __future__ import annotations

import enum
import fnmatch
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from greenlight.core import conditions
from greenlight.core.conditions import Condition as Condition
from greenlight.core.conditions import RequestFacts as RequestFacts
from greenlight.core.durations import (
    DEFAULT_TIMEOUT,
    format_duration,
    parse_duration,
    parse_timeout,
)
from greenlight.core.identity import canonical, grants

# Bounds, the same as the CRDs' (crds/greenlight.dev_*approvalpolicies.yaml).
MAX_GLOBS = 20
MAX_GLOB_LENGTH = 256
MAX_APPROVALS = 10
MAX_APPROVER_NAMES = 20
MAX_NAME_LENGTH = 253
MAX_FROM_GROUPS = 5
MAX_CHANNELS = 5
MAX_MENTIONS = 5
MAX_ESCALATION_STEPS = 3
MAX_MESSAGE_LENGTH = 1024
MAX_SELECTOR_LABELS = 32
MAX_SELECTOR_EXPRESSIONS = 16
MAX_SELECTOR_VALUES = 32
MIN_REMINDER, MAX_REMINDER = timedelta(minutes=5), timedelta(hours=24)
# A policy's defaultTimeout replaces the 1h default only with a shorter one: DESIGN §2, policies
# can only shorten a timeout (a requester may ask for longer, up to every maxTimeout).
MIN_DEFAULT_TIMEOUT = timedelta(minutes=1)
MIN_ESCALATION, MAX_ESCALATION = timedelta(minutes=1), timedelta(days=7)
# At most this many policies may apply to one request: status.policy names each of them and
# keeps each restricting approver set, so its size stays bounded. More is refused (fail closed).
MAX_MATCHING = 16
# What the conditions of one create may take between them: conditions run on the admission path
# holding the interpreter, and a namespace's admins write its ApprovalPolicies. Past this, the
# conditions not yet evaluated count as erroring (read strictly: they hold unless they would
# auto-approve), so a slow policy makes creates stricter, never looser or stuck.
CONDITIONS_SECONDS = 0.1
# Merged escalation keeps at most this many steps; later ones fold into the last (earlier, so
# stricter, never dropped).
MAX_EFFECTIVE_STEPS = 10

SLACK_CHANNEL = re.compile(r"#?[A-Za-z0-9._-]+")
SLACK_USER_GROUP = re.compile(r"S[A-Z0-9]{2,30}")
# As spec.notify.teams.conversation of a request: the id names a Bot Connector URL path.
TEAMS_CONVERSATION = re.compile(r"19:[A-Za-z0-9._%=+-]+@thread\.(tacv2|skype|v2)")
REQUESTER_SOURCE = "spec.policy.approvers"

DEFAULT_DURATION = parse_timeout(DEFAULT_TIMEOUT)


class PolicyKind(enum.StrEnum):
    CLUSTER = "ClusterApprovalPolicy"
    NAMESPACED = "ApprovalPolicy"


class Outcome(enum.StrEnum):
    REQUIRE_APPROVAL = "RequireApproval"
    AUTO_APPROVE = "AutoApprove"
    REFUSE = "Refuse"


class PolicyError(ValueError):
    """A policy Greenlight cannot apply as written; the message starts with the field.

    `fallback` is set when only the condition is at fault: the same policy with a condition that
    always errors, so it still applies where its globs and namespaces match (a RequireApproval
    or Refuse policy) or never (AutoApprove) — the strict reading of a policy that is broken.
    """

    def __init__(self, field: str, problem: str, fallback: CompiledPolicy | None = None) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
        self.fallback = fallback


# --- the parts of a policy -------------------------------------------------------------------


@dataclass(frozen=True)
class Glob:
    """An fnmatch-style pattern: `*` any run of characters (`/` and spaces too), `?` one
    character, `[abc]`, `[a-z]`, `[!abc]` one character of (not of) a set; case-sensitive,
    anchored at both ends; no escape character (write `[*]` for a literal `*`)."""

    pattern: str
    regex: re.Pattern[str] = field(compare=False, repr=False)
    literal: bool = False  # no `*`, `?` or `[`: matches exactly the pattern

    def matches(self, text: str) -> bool:
        if self.literal:
            return text == self.pattern
        return self.regex.match(text) is not None


def glob_problem(pattern: str) -> str | None:
    """Why `pattern` is not a glob Greenlight accepts (an unclosed `[`), or None."""
    if not pattern:
        return "a glob must not be empty (write * for any)"
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] != "[":
            i += 1
            continue
        j = i + 1
        if j < n and pattern[j] == "!":
            j += 1
        if j < n and pattern[j] == "]":
            j += 1
        while j < n and pattern[j] != "]":
            j += 1
        if j >= n:
            return (
                f"'[' at position {i} is never closed; close the set with ']' "
                "or write '[[]' for a literal '['"
            )
        i = j + 1
    return None


def compile_glob(pattern: str) -> Glob:
    """Compile one glob; raise ValueError saying what is wrong with it."""
    problem = glob_problem(pattern)
    if problem is not None:
        raise ValueError(f"invalid glob {pattern!r}: {problem}")
    literal = not any(char in pattern for char in "*?[")
    return Glob(pattern, re.compile(fnmatch.translate(pattern)), literal)


@dataclass(frozen=True)
class SelectorRequirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """A metav1.LabelSelector over namespace labels; the empty selector selects every namespace."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.match_labels) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )


@dataclass(frozen=True)
class ApproverSet:
    """Who one source lets decide: listed by user name (compared after `canonical`) or group."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    source: str = ""  # the policy (or spec.policy.approvers) that restricts

    def admits(self, user: str, groups: Iterable[str]) -> bool:
        return grants(self.users, user) or bool(set(groups) & set(self.groups))

    @property
    def restricts(self) -> bool:
        return bool(self.users or self.groups)

    def same_people(self, other: ApproverSet) -> bool:
        return {canonical(u) for u in self.users} == {canonical(u) for u in other.users} and set(
            self.groups
        ) == set(other.groups)


@dataclass(frozen=True)
class GroupQuorum:
    """At least `count` distinct approvers from `group`."""

    group: str
    count: int


@dataclass(frozen=True)
class Notify:
    slack: tuple[str, ...] = ()  # Slack channel ids
    teams: tuple[str, ...] = ()  # Teams conversation ids

    def union(self, other: Notify) -> Notify:
        return Notify(_union(self.slack, other.slack), _union(self.teams, other.teams))


@dataclass(frozen=True)
class Mention:
    slack_user_groups: tuple[str, ...] = ()  # Slack user group ids (S0123ABC)
    teams_tags: tuple[str, ...] = ()  # Teams tags, as the Teams notifier resolves them

    def union(self, other: Mention) -> Mention:
        return Mention(
            _union(self.slack_user_groups, other.slack_user_groups),
            _union(self.teams_tags, other.teams_tags),
        )


@dataclass(frozen=True)
class EscalationStep:
    """Once a request has been pending `after`, tell `notify` and mention `mention`."""

    after: timedelta
    notify: Notify = Notify()
    mention: Mention = Mention()

    def merged(self, other: EscalationStep) -> EscalationStep:
        after = min(self.after, other.after)
        return EscalationStep(
            after, self.notify.union(other.notify), self.mention.union(other.mention)
        )


@dataclass(frozen=True)
class Requirements:
    """`spec.require` of one policy; None and empty mean "this policy says nothing"."""

    approvals: int | None = None
    approvers: ApproverSet = ApproverSet()
    from_groups: tuple[GroupQuorum, ...] = ()
    max_timeout: timedelta | None = None
    default_timeout: timedelta | None = None
    notify: Notify = Notify()


@dataclass(frozen=True)
class CompiledPolicy:
    kind: PolicyKind
    name: str
    namespace: str = ""  # ApprovalPolicy only
    resource_version: str = ""
    namespaces: LabelSelector | None = None  # ClusterApprovalPolicy only; None: every namespace
    actions: tuple[Glob, ...] | None = None  # None: any action
    targets: tuple[Glob, ...] | None = None  # None: any target
    condition: Condition | None = None
    require: Requirements = Requirements()
    outcome: Outcome = Outcome.REQUIRE_APPROVAL
    message: str = ""  # shown when the outcome is Refuse
    reminders_every: timedelta | None = None
    escalation: tuple[EscalationStep, ...] = ()
    govern_namespaces: bool = False

    @property
    def key(self) -> tuple[PolicyKind, str, str]:
        return self.kind, self.namespace, self.name

    @property
    def ref(self) -> str:
        """`ClusterApprovalPolicy/name` or `ApprovalPolicy/namespace/name`."""
        if self.kind is PolicyKind.CLUSTER:
            return f"{self.kind.value}/{self.name}"
        return f"{self.kind.value}/{self.namespace}/{self.name}"

    @property
    def source(self) -> str:
        """How `status.policy.from` names it: the ref at its resourceVersion."""
        return f"{self.ref}@{self.resource_version}"

    def selects(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if self.kind is PolicyKind.NAMESPACED:
            return self.namespace == namespace
        return self.namespaces is None or self.namespaces.matches(labels)

    def names(self, action: str, target: str) -> bool:
        """Whether the action and target globs both match."""
        return (self.actions is None or any(g.matches(action) for g in self.actions)) and (
            self.targets is None or any(g.matches(target) for g in self.targets)
        )


# --- compiling -------------------------------------------------------------------------------


def compile_policy(obj: Mapping[str, Any]) -> CompiledPolicy:
    """Compile a ClusterApprovalPolicy or ApprovalPolicy object; raise PolicyError naming the
    field that is wrong. The API server's schema refuses most of these first; this is what
    the operator relies on, so it checks every bound itself."""
    kind = _kind(obj.get("kind"))
    meta = _mapping(obj.get("metadata"), "metadata")
    name = _string(meta.get("name"), "metadata.name", max_length=MAX_NAME_LENGTH)
    namespace = ""
    if kind is PolicyKind.NAMESPACED:
        namespace = _string(meta.get("namespace"), "metadata.namespace", max_length=63)
    spec = _mapping(obj.get("spec"), "spec")
    match = _mapping(spec.get("match"), "spec.match")
    outcome = _outcome(spec.get("outcome"), kind)
    policy = CompiledPolicy(
        kind=kind,
        name=name,
        namespace=namespace,
        resource_version=str(meta.get("resourceVersion") or ""),
        namespaces=_namespaces(match.get("namespaces"), kind),
        actions=_globs(match.get("actions"), "spec.match.actions"),
        targets=_globs(match.get("targets"), "spec.match.targets"),
        require=_requirements(spec.get("require"), "spec.require"),
        outcome=outcome,
        message=_message(spec.get("message"), outcome),
        reminders_every=_reminders(spec.get("reminders")),
        escalation=_escalation(spec.get("escalation")),
        govern_namespaces=_govern(spec.get("governNamespaces"), kind),
    )
    _only_when_requiring(spec, outcome)
    if policy.require.approvers.restricts:
        approvers = replace(policy.require.approvers, source=policy.source)
        policy = replace(policy, require=replace(policy.require, approvers=approvers))
    text = match.get("condition")
    if text is None:
        return policy
    text = _string(text, "spec.match.condition", max_length=conditions.MAX_LENGTH)
    try:
        return replace(policy, condition=conditions.compile_condition(text))
    except ValueError as error:
        broken = Condition(text, None, frozenset(), str(error))
        raise PolicyError(
            "spec.match.condition", str(error), replace(policy, condition=broken)
        ) from None


def _kind(value: Any) -> PolicyKind:
    try:
        return PolicyKind(value)
    except ValueError:
        raise PolicyError(
            "kind", f"{value!r} is not {PolicyKind.CLUSTER.value} or {PolicyKind.NAMESPACED.value}"
        ) from None


def _outcome(value: Any, kind: PolicyKind) -> Outcome:
    if value is None:
        return Outcome.REQUIRE_APPROVAL
    try:
        outcome = Outcome(value)
    except ValueError:
        choices = ", ".join(o.value for o in Outcome)
        raise PolicyError("spec.outcome", f"{value!r} is not one of {choices}") from None
    if outcome is Outcome.AUTO_APPROVE and kind is PolicyKind.NAMESPACED:
        raise PolicyError(
            "spec.outcome",
            "AutoApprove is only for a ClusterApprovalPolicy: an ApprovalPolicy can only "
            "tighten (RequireApproval or Refuse)",
        )
    return outcome


def _message(value: Any, outcome: Outcome) -> str:
    if value is None:
        return ""
    if outcome is not Outcome.REFUSE:
        raise PolicyError("spec.message", "is shown on outcome Refuse only; remove it")
    return _string(value, "spec.message", max_length=MAX_MESSAGE_LENGTH)


def _only_when_requiring(spec: Mapping[str, Any], outcome: Outcome) -> None:
    if outcome is Outcome.REQUIRE_APPROVAL:
        return
    for key in ("require", "reminders", "escalation"):
        if spec.get(key) is not None:
            raise PolicyError(
                f"spec.{key}", f"applies to outcome RequireApproval only, not {outcome.value}"
            )


def _govern(value: Any, kind: PolicyKind) -> bool:
    if value is None:
        return False
    if kind is PolicyKind.NAMESPACED:
        raise PolicyError(
            "spec.governNamespaces", "only a ClusterApprovalPolicy can govern namespaces"
        )
    if not isinstance(value, bool):
        raise PolicyError("spec.governNamespaces", f"must be true or false, not {value!r}")
    return value


def _namespaces(value: Any, kind: PolicyKind) -> LabelSelector | None:
    field_ = "spec.match.namespaces"
    if value is None:
        return None
    if kind is PolicyKind.NAMESPACED:
        raise PolicyError(
            field_,
            "only a ClusterApprovalPolicy selects namespaces; an ApprovalPolicy "
            "applies in its own namespace",
        )
    selector = _mapping(value, field_)
    labels = _mapping(selector.get("matchLabels"), f"{field_}.matchLabels")
    if len(labels) > MAX_SELECTOR_LABELS:
        raise PolicyError(f"{field_}.matchLabels", f"at most {MAX_SELECTOR_LABELS} labels")
    pairs = tuple(
        (str(k), _string(v, f"{field_}.matchLabels.{k}", max_length=63, min_length=0))
        for k, v in sorted(labels.items())
    )
    expressions = _list(
        selector.get("matchExpressions"), f"{field_}.matchExpressions", MAX_SELECTOR_EXPRESSIONS
    )
    return LabelSelector(
        pairs,
        tuple(
            _requirement(item, f"{field_}.matchExpressions[{i}]")
            for i, item in enumerate(expressions)
        ),
    )


def _requirement(value: Any, field_: str) -> SelectorRequirement:
    item = _mapping(value, field_)
    key = _string(item.get("key"), f"{field_}.key", max_length=317)
    operator = item.get("operator")
    values = _strings(
        item.get("values"),
        f"{field_}.values",
        max_items=MAX_SELECTOR_VALUES,
        max_length=63,
        min_length=0,
    )
    if operator in ("In", "NotIn"):
        if not values:
            raise PolicyError(f"{field_}.values", f"operator {operator} needs at least one value")
    elif operator in ("Exists", "DoesNotExist"):
        if values:
            raise PolicyError(f"{field_}.values", f"operator {operator} takes no values")
    else:
        raise PolicyError(
            f"{field_}.operator", f"{operator!r} is not one of In, NotIn, Exists, DoesNotExist"
        )
    return SelectorRequirement(key, str(operator), frozenset(values))


def _globs(value: Any, field_: str) -> tuple[Glob, ...] | None:
    if value is None:
        return None
    patterns = _list(value, field_, MAX_GLOBS)
    if not patterns:
        raise PolicyError(field_, "must list at least one glob (leave it out to match any)")
    globs = []
    for i, pattern in enumerate(patterns):
        text = _string(pattern, f"{field_}[{i}]", max_length=MAX_GLOB_LENGTH)
        try:
            globs.append(compile_glob(text))
        except ValueError as error:
            raise PolicyError(f"{field_}[{i}]", str(error)) from None
    return tuple(globs)


def _requirements(value: Any, field_: str) -> Requirements:
    require = _mapping(value, field_)
    approvals = require.get("approvals")
    max_timeout = _timeout(require.get("maxTimeout"), f"{field_}.maxTimeout")
    default_timeout = None
    if require.get("defaultTimeout") is not None:
        default_timeout = _duration(
            _string(require.get("defaultTimeout"), f"{field_}.defaultTimeout", max_length=16),
            f"{field_}.defaultTimeout",
            MIN_DEFAULT_TIMEOUT,
            DEFAULT_DURATION,
        )
    if max_timeout and default_timeout and default_timeout > max_timeout:
        raise PolicyError(
            f"{field_}.defaultTimeout",
            f"{format_duration(default_timeout)} is longer than maxTimeout "
            f"{format_duration(max_timeout)}",
        )
    return Requirements(
        approvals=None
        if approvals is None
        else _integer(approvals, f"{field_}.approvals", 1, MAX_APPROVALS),
        approvers=_approvers(require.get("approvers"), f"{field_}.approvers"),
        from_groups=_from_groups(require.get("fromGroups"), f"{field_}.fromGroups"),
        max_timeout=max_timeout,
        default_timeout=default_timeout,
        notify=_notify(require.get("notify"), f"{field_}.notify"),
    )


def _approvers(value: Any, field_: str) -> ApproverSet:
    approvers = _mapping(value, field_)
    return ApproverSet(
        users=_strings(
            approvers.get("users"),
            f"{field_}.users",
            max_items=MAX_APPROVER_NAMES,
            max_length=MAX_NAME_LENGTH,
        ),
        groups=_strings(
            approvers.get("groups"),
            f"{field_}.groups",
            max_items=MAX_APPROVER_NAMES,
            max_length=MAX_NAME_LENGTH,
        ),
    )


def _from_groups(value: Any, field_: str) -> tuple[GroupQuorum, ...]:
    quorums: dict[str, GroupQuorum] = {}
    for i, raw in enumerate(_list(value, field_, MAX_FROM_GROUPS)):
        item = _mapping(raw, f"{field_}[{i}]")
        group = _string(item.get("group"), f"{field_}[{i}].group", max_length=MAX_NAME_LENGTH)
        count = _integer(item.get("count", 1), f"{field_}[{i}].count", 1, MAX_APPROVALS)
        if group in quorums:
            raise PolicyError(f"{field_}[{i}].group", f"{group!r} is listed twice")
        quorums[group] = GroupQuorum(group, count)
    return tuple(quorums.values())


def _notify(value: Any, field_: str) -> Notify:
    notify = _mapping(value, field_)
    return Notify(
        slack=_strings(
            notify.get("slack"),
            f"{field_}.slack",
            max_items=MAX_CHANNELS,
            max_length=80,
            pattern=SLACK_CHANNEL,
        ),
        teams=_strings(
            notify.get("teams"),
            f"{field_}.teams",
            max_items=MAX_CHANNELS,
            max_length=256,
            pattern=TEAMS_CONVERSATION,
        ),
    )


def _mention(value: Any, field_: str) -> Mention:
    mention = _mapping(value, field_)
    return Mention(
        slack_user_groups=_strings(
            mention.get("slackUserGroups"),
            f"{field_}.slackUserGroups",
            max_items=MAX_MENTIONS,
            max_length=32,
            pattern=SLACK_USER_GROUP,
        ),
        teams_tags=_strings(
            mention.get("teamsTags"), f"{field_}.teamsTags", max_items=MAX_MENTIONS, max_length=128
        ),
    )


def _reminders(value: Any) -> timedelta | None:
    if value is None:
        return None
    reminders = _mapping(value, "spec.reminders")
    every = _string(reminders.get("every"), "spec.reminders.every", max_length=16)
    return _duration(every, "spec.reminders.every", MIN_REMINDER, MAX_REMINDER)


def _escalation(value: Any) -> tuple[EscalationStep, ...]:
    steps: list[EscalationStep] = []
    for i, raw in enumerate(_list(value, "spec.escalation", MAX_ESCALATION_STEPS)):
        field_ = f"spec.escalation[{i}]"
        item = _mapping(raw, field_)
        after_text = _string(item.get("after"), f"{field_}.after", max_length=16)
        step = EscalationStep(
            after=_duration(after_text, f"{field_}.after", MIN_ESCALATION, MAX_ESCALATION),
            notify=_notify(item.get("notify"), f"{field_}.notify"),
            mention=_mention(item.get("mention"), f"{field_}.mention"),
        )
        if step.notify == Notify() and step.mention == Mention():
            raise PolicyError(field_, "tells nobody: give notify or mention")
        if steps and step.after <= steps[-1].after:
            raise PolicyError(
                f"{field_}.after",
                "must come after the previous step's "
                f"{format_duration(steps[-1].after, days=False)}",
            )
        steps.append(step)
    return tuple(steps)


def _timeout(value: Any, field_: str) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_timeout(_string(value, field_, max_length=16))
    except ValueError as error:
        raise PolicyError(field_, str(error)) from None


def _duration(text: str, field_: str, low: timedelta, high: timedelta) -> timedelta:
    try:
        return parse_duration(text, "duration", minimum=low, maximum=high, days=False)
    except ValueError as error:
        raise PolicyError(field_, str(error)) from None


def _mapping(value: Any, field_: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PolicyError(field_, f"must be an object, not {type(value).__name__}")
    return value


def _list(value: Any, field_: str, max_items: int) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise PolicyError(field_, f"must be a list, not {type(value).__name__}")
    if len(value) > max_items:
        raise PolicyError(field_, f"lists {len(value)} items; at most {max_items}")
    return value


def _string(
    value: Any,
    field_: str,
    *,
    max_length: int,
    min_length: int = 1,
    pattern: re.Pattern[str] | None = None,
) -> str:
    if not isinstance(value, str):
        shown = "missing" if value is None else f"a {type(value).__name__}"
        raise PolicyError(field_, f"must be a string, is {shown}")
    if not min_length <= len(value) <= max_length:
        raise PolicyError(field_, f"must be {min_length}..{max_length} characters long")
    if pattern is not None and pattern.fullmatch(value) is None:
        raise PolicyError(field_, f"{value!r} does not match {pattern.pattern}")
    return value


def _strings(
    value: Any,
    field_: str,
    *,
    max_items: int,
    max_length: int,
    min_length: int = 1,
    pattern: re.Pattern[str] | None = None,
) -> tuple[str, ...]:
    return tuple(
        _string(
            item, f"{field_}[{i}]", max_length=max_length, min_length=min_length, pattern=pattern
        )
        for i, item in enumerate(_list(value, field_, max_items))
    )


def _integer(value: Any, field_: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(field_, f"must be an integer, not {value!r}")
    if not low <= value <= high:
        raise PolicyError(field_, f"{value} is not between {low} and {high}")
    return value


# --- what applies to one request -------------------------------------------------------------

# Bounds of status.policy (EffectivePolicy.to_json), the same as its schema in the
# ApprovalRequest CRD: what MAX_MATCHING policies and the requester can ask for together.
MAX_REQUESTER_APPROVERS = 50
MAX_EFFECTIVE_SETS = MAX_MATCHING + 1
MAX_EFFECTIVE_GROUPS = MAX_MATCHING * MAX_FROM_GROUPS
MAX_EFFECTIVE_CHANNELS = MAX_MATCHING * MAX_CHANNELS * (MAX_ESCALATION_STEPS + 1) + 1


@dataclass(frozen=True)
class EffectivePolicy:
    """What the matching policies and the requester require together (`status.policy`)."""

    outcome: Outcome = Outcome.REQUIRE_APPROVAL
    required_approvals: int = 1
    approvers: tuple[ApproverSet, ...] = ()  # a conjunction: a decider must pass every set
    from_groups: tuple[GroupQuorum, ...] = ()
    timeout: timedelta = DEFAULT_DURATION
    notify: Notify = Notify()
    reminders_every: timedelta | None = None
    escalation: tuple[EscalationStep, ...] = ()
    sources: tuple[str, ...] = ()

    def admits(self, user: str, groups: Iterable[str]) -> bool:
        """Whether every restricting approver set lets this person decide."""
        held = tuple(groups)
        return all(approvers.admits(user, held) for approvers in self.approvers)

    def to_json(self) -> dict[str, Any]:
        """`status.policy`: every key always present, in this order; bounded (see MAX_*)."""
        return {
            "outcome": self.outcome.value,
            "requiredApprovals": self.required_approvals,
            "approvers": [
                {"users": list(s.users), "groups": list(s.groups), "from": s.source}
                for s in self.approvers
            ],
            "fromGroups": [{"group": q.group, "count": q.count} for q in self.from_groups],
            "timeout": format_duration(self.timeout),
            "notify": _notify_json(self.notify),
            "reminders": {"every": format_duration(self.reminders_every, days=False)}
            if self.reminders_every
            else {},
            "escalation": [
                {
                    "after": format_duration(step.after, days=False),
                    "notify": _notify_json(step.notify),
                    "mention": {
                        "slackUserGroups": list(step.mention.slack_user_groups),
                        "teamsTags": list(step.mention.teams_tags),
                    },
                }
                for step in self.escalation
            ],
            "from": list(self.sources),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EffectivePolicy:
        """Read `status.policy`. Missing keys take their defaults; a value of the wrong type or
        out of bounds raises ValueError naming the key (`status.policy.timeout: ...`)."""
        at = "status.policy"
        data = _mapping(data, at)
        outcome = data.get("outcome", Outcome.REQUIRE_APPROVAL.value)
        try:
            parsed_outcome = Outcome(outcome)
        except ValueError:
            raise PolicyError(f"{at}.outcome", f"{outcome!r} is not an outcome") from None
        reminders = _mapping(data.get("reminders"), f"{at}.reminders")
        every = reminders.get("every")
        return cls(
            outcome=parsed_outcome,
            required_approvals=_integer(
                data.get("requiredApprovals", 1), f"{at}.requiredApprovals", 1, MAX_APPROVALS
            ),
            approvers=tuple(
                _approver_set_json(item, f"{at}.approvers[{i}]")
                for i, item in enumerate(
                    _list(data.get("approvers"), f"{at}.approvers", MAX_EFFECTIVE_SETS)
                )
            ),
            from_groups=tuple(
                _quorum_json(item, f"{at}.fromGroups[{i}]")
                for i, item in enumerate(
                    _list(data.get("fromGroups"), f"{at}.fromGroups", MAX_EFFECTIVE_GROUPS)
                )
            ),
            timeout=_timeout(data.get("timeout", DEFAULT_TIMEOUT), f"{at}.timeout")
            or DEFAULT_DURATION,
            notify=_notify_status(data.get("notify"), f"{at}.notify"),
            reminders_every=None
            if every is None
            else _duration(
                _string(every, f"{at}.reminders.every", max_length=16),
                f"{at}.reminders.every",
                MIN_REMINDER,
                MAX_REMINDER,
            ),
            escalation=tuple(
                _step_json(item, f"{at}.escalation[{i}]")
                for i, item in enumerate(
                    _list(data.get("escalation"), f"{at}.escalation", MAX_EFFECTIVE_STEPS)
                )
            ),
            sources=_strings(
                data.get("from"), f"{at}.from", max_items=MAX_MATCHING, max_length=600
            ),
        )


def _notify_json(notify: Notify) -> dict[str, list[str]]:
    return {"slack": list(notify.slack), "teams": list(notify.teams)}


def _notify_status(value: Any, field_: str) -> Notify:
    notify = _mapping(value, field_)
    return Notify(
        _strings(
            notify.get("slack"), f"{field_}.slack", max_items=MAX_EFFECTIVE_CHANNELS, max_length=80
        ),
        _strings(
            notify.get("teams"), f"{field_}.teams", max_items=MAX_EFFECTIVE_CHANNELS, max_length=256
        ),
    )


def _approver_set_json(value: Any, field_: str) -> ApproverSet:
    item = _mapping(value, field_)
    limit = MAX_REQUESTER_APPROVERS
    return ApproverSet(
        users=_strings(
            item.get("users"), f"{field_}.users", max_items=limit, max_length=MAX_NAME_LENGTH
        ),
        groups=_strings(
            item.get("groups"), f"{field_}.groups", max_items=limit, max_length=MAX_NAME_LENGTH
        ),
        source=_string(item.get("from", ""), f"{field_}.from", max_length=600, min_length=0),
    )


def _quorum_json(value: Any, field_: str) -> GroupQuorum:
    item = _mapping(value, field_)
    return GroupQuorum(
        _string(item.get("group"), f"{field_}.group", max_length=MAX_NAME_LENGTH),
        _integer(item.get("count"), f"{field_}.count", 1, MAX_APPROVALS),
    )


def _step_json(value: Any, field_: str) -> EscalationStep:
    item = _mapping(value, field_)
    mention = _mapping(item.get("mention"), f"{field_}.mention")
    limit = MAX_EFFECTIVE_CHANNELS
    return EscalationStep(
        after=_duration(
            _string(item.get("after"), f"{field_}.after", max_length=16),
            f"{field_}.after",
            MIN_ESCALATION,
            MAX_ESCALATION,
        ),
        notify=_notify_status(item.get("notify"), f"{field_}.notify"),
        mention=Mention(
            _strings(
                mention.get("slackUserGroups"),
                f"{field_}.mention.slackUserGroups",
                max_items=limit,
                max_length=32,
            ),
            _strings(
                mention.get("teamsTags"),
                f"{field_}.mention.teamsTags",
                max_items=limit,
                max_length=128,
            ),
        ),
    )


@dataclass(frozen=True)
class _Ask:
    """What the requester's own spec asks for. Values the schema would refuse read as their
    defaults: evaluation runs in admission, before the schema has checked the object."""

    approvals: int
    approvers: ApproverSet
    timeout: timedelta | None  # None: the requester gave none
    notify: Notify

    @property
    def beyond_defaults(self) -> bool:
        return self.approvals > 1 or self.approvers.restricts

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> _Ask:
        policy = _loose_mapping(spec.get("policy"))
        approvers = _loose_mapping(policy.get("approvers"))
        approvals = policy.get("requiredApprovals", 1)
        if isinstance(approvals, bool) or not isinstance(approvals, int):
            approvals = 1
        notify = _loose_mapping(spec.get("notify"))
        slack = _loose_mapping(notify.get("slack")).get("channel")
        teams = _loose_mapping(notify.get("teams")).get("conversation")
        return cls(
            approvals=min(max(approvals, 1), MAX_APPROVALS),
            approvers=ApproverSet(
                _loose_strings(approvers.get("users")),
                _loose_strings(approvers.get("groups")),
                REQUESTER_SOURCE,
            ),
            timeout=_loose_timeout(spec.get("timeout")),
            notify=Notify(
                (slack,) if isinstance(slack, str) and slack else (),
                (teams,) if isinstance(teams, str) and teams else (),
            ),
        )


def combine(policies: Sequence[CompiledPolicy], spec: Mapping[str, Any]) -> EffectivePolicy:
    """What `policies` (all matching one request) and the requester's `spec` require together;
    the module docstring states the rules."""
    ask = _Ask.of(spec)
    requires = [p.require for p in policies]
    approvals = max(
        [ask.approvals]
        + [r.approvals for r in requires if r.approvals is not None]
        + [q.count for r in requires for q in r.from_groups]
    )
    defaults = [r.default_timeout for r in requires if r.default_timeout is not None]
    base = ask.timeout if ask.timeout is not None else min([DEFAULT_DURATION, *defaults])
    notify = Notify(
        _union(ask.notify.slack, (c for r in requires for c in r.notify.slack)),
        _union(ask.notify.teams, (c for r in requires for c in r.notify.teams)),
    )
    return EffectivePolicy(
        outcome=_combined_outcome(policies, ask),
        required_approvals=approvals,
        approvers=_approver_sets(policies, ask),
        from_groups=_quorums(requires),
        timeout=min([base] + [r.max_timeout for r in requires if r.max_timeout is not None]),
        notify=notify,
        reminders_every=min(
            (p.reminders_every for p in policies if p.reminders_every is not None), default=None
        ),
        escalation=_merged_escalation(policies),
        sources=tuple(p.source for p in policies),
    )


def _combined_outcome(policies: Sequence[CompiledPolicy], ask: _Ask) -> Outcome:
    outcomes = {p.outcome for p in policies}
    if Outcome.REFUSE in outcomes:
        return Outcome.REFUSE
    if outcomes == {Outcome.AUTO_APPROVE} and not ask.beyond_defaults:
        return Outcome.AUTO_APPROVE
    return Outcome.REQUIRE_APPROVAL


def _approver_sets(policies: Sequence[CompiledPolicy], ask: _Ask) -> tuple[ApproverSet, ...]:
    sets: list[ApproverSet] = [ask.approvers] if ask.approvers.restricts else []
    for policy in policies:
        approvers = policy.require.approvers
        if approvers.restricts and not any(approvers.same_people(s) for s in sets):
            sets.append(approvers)
    return tuple(sets)


def _quorums(requires: Iterable[Requirements]) -> tuple[GroupQuorum, ...]:
    counts: dict[str, int] = {}
    for require in requires:
        for quorum in require.from_groups:
            counts[quorum.group] = max(counts.get(quorum.group, 0), quorum.count)
    return tuple(GroupQuorum(group, count) for group, count in sorted(counts.items()))


def _merged_escalation(policies: Iterable[CompiledPolicy]) -> tuple[EscalationStep, ...]:
    """Every source's steps by time, steps at the same time merged; beyond MAX_EFFECTIVE_STEPS
    the later steps fold into the last kept one (so they come earlier, never not at all)."""
    merged: list[EscalationStep] = []
    for step in sorted((s for p in policies for s in p.escalation), key=lambda s: s.after):
        if merged and (merged[-1].after == step.after or len(merged) == MAX_EFFECTIVE_STEPS):
            merged[-1] = merged[-1].merged(step)
        else:
            merged.append(step)
    return tuple(merged)


def _union(first: Iterable[str], second: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(first) | set(second)))


def _loose_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _loose_strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        return ()
    return tuple(v for v in value if isinstance(v, str) and v)[:MAX_REQUESTER_APPROVERS]


def _loose_timeout(value: Any) -> timedelta | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_timeout(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class ConditionError:
    """A condition that errored during one evaluation (read strictly; the caller audits it)."""

    source: str
    message: str


@dataclass(frozen=True)
class PolicyDecision:
    """The answer for one request: its outcome, what it requires, and why."""

    outcome: Outcome
    effective: EffectivePolicy
    sources: tuple[str, ...]
    refusal_message: str = ""
    condition_errors: tuple[ConditionError, ...] = ()
    unmatched_in_governed_namespace: bool = False


@dataclass(frozen=True)
class _Bucket:
    """One scope's policies (positions in `_Index.policies`) by action: a literal action is a
    dict lookup, each distinct glob is matched once, policies naming no action always apply."""

    exact: Mapping[str, tuple[int, ...]]
    globbed: tuple[tuple[Glob, tuple[int, ...]], ...]
    any_action: tuple[int, ...]

    def candidates(self, action: str) -> list[int]:
        found = set(self.any_action)
        found.update(self.exact.get(action, ()))
        for glob, positions in self.globbed:
            if glob.matches(action):
                found.update(positions)
        return sorted(found)


@dataclass(frozen=True)
class _Index:
    policies: tuple[CompiledPolicy, ...]  # cluster first, then namespaced; by namespace, name
    cluster: _Bucket
    namespaced: Mapping[str, _Bucket]
    governing: tuple[CompiledPolicy, ...]

    @classmethod
    def of(cls, policies: Iterable[CompiledPolicy]) -> _Index:
        ordered = _shared_selectors(sorted(policies, key=_order))
        cluster = [i for i, p in enumerate(ordered) if p.kind is PolicyKind.CLUSTER]
        by_namespace: dict[str, list[int]] = {}
        for i, p in enumerate(ordered):
            if p.kind is PolicyKind.NAMESPACED:
                by_namespace.setdefault(p.namespace, []).append(i)
        return cls(
            policies=ordered,
            cluster=_bucket(ordered, cluster),
            namespaced={ns: _bucket(ordered, found) for ns, found in by_namespace.items()},
            governing=tuple(p for p in ordered if p.govern_namespaces),
        )

    def named(
        self, namespace: str, labels: Mapping[str, str], action: str, target: str
    ) -> list[CompiledPolicy]:
        """The policies whose scope, action and target globs match, in order. Many policies
        share selectors and target globs, so each is matched once per call."""
        found: list[CompiledPolicy] = []
        selected: dict[int, bool] = {}  # id(selector) -> matches the namespace's labels
        targeted: dict[str, bool] = {}  # target glob -> matches the target
        for bucket in (self.cluster, self.namespaced.get(namespace)):
            if bucket is None:
                continue
            for position in bucket.candidates(action):
                policy = self.policies[position]
                selector = policy.namespaces
                if selector is not None:
                    key = id(selector)
                    if key not in selected:
                        selected[key] = selector.matches(labels)
                    if not selected[key]:
                        continue
                if policy.targets is None or _any_glob(policy.targets, target, targeted):
                    found.append(policy)
        return found


def _any_glob(globs: Iterable[Glob], text: str, memo: dict[str, bool]) -> bool:
    for glob in globs:
        hit = memo.get(glob.pattern)
        if hit is None:
            hit = memo[glob.pattern] = glob.matches(text)
        if hit:
            return True
    return False


def _order(policy: CompiledPolicy) -> tuple[int, str, str]:
    return (0 if policy.kind is PolicyKind.CLUSTER else 1, policy.namespace, policy.name)


def _shared_selectors(policies: Iterable[CompiledPolicy]) -> tuple[CompiledPolicy, ...]:
    """The policies, equal namespace selectors replaced by one object: `_Index.named` memoizes
    a selector's answer by identity, so it is computed once per evaluation."""
    seen: dict[LabelSelector, LabelSelector] = {}
    shared = []
    for policy in policies:
        selector = policy.namespaces
        if selector is not None and seen.setdefault(selector, selector) is not selector:
            policy = replace(policy, namespaces=seen[selector])
        shared.append(policy)
    return tuple(shared)


def _bucket(policies: Sequence[CompiledPolicy], positions: Iterable[int]) -> _Bucket:
    exact: dict[str, list[int]] = {}
    globbed: dict[str, tuple[Glob, list[int]]] = {}
    any_action: list[int] = []
    for position in positions:
        actions = policies[position].actions
        if actions is None:
            any_action.append(position)
            continue
        for glob in actions:
            if glob.literal:
                exact.setdefault(glob.pattern, []).append(position)
            else:
                globbed.setdefault(glob.pattern, (glob, []))[1].append(position)
    return _Bucket(
        exact={k: tuple(v) for k, v in exact.items()},
        globbed=tuple((glob, tuple(found)) for glob, found in globbed.values()),
        any_action=tuple(any_action),
    )


class PolicySet:
    """The compiled policies of a cluster, indexed for evaluation on every create.

    `upsert` and `remove` are cheap; the index is rebuilt on the next `evaluate` after a
    change, and swapped in whole, so an evaluation always sees one consistent set.
    """

    def __init__(self, policies: Iterable[CompiledPolicy] = ()) -> None:
        self._policies: dict[tuple[PolicyKind, str, str], CompiledPolicy] = {}
        self._index: _Index | None = None
        for policy in policies:
            self.upsert(policy)

    def __len__(self) -> int:
        return len(self._policies)

    def upsert(self, policy: CompiledPolicy) -> None:
        self._policies[policy.key] = policy
        self._index = None

    def remove(self, kind: PolicyKind | str, namespace: str, name: str) -> None:
        kind = PolicyKind(kind)
        self._policies.pop((kind, namespace if kind is PolicyKind.NAMESPACED else "", name), None)
        self._index = None

    def policies(self) -> tuple[CompiledPolicy, ...]:
        return self._current().policies

    def evaluate(self, facts: RequestFacts) -> PolicyDecision:
        """Which policies apply to this request and what they require together."""
        index = self._current()
        action, target = str(facts.spec.get("action", "")), str(facts.spec.get("target", ""))
        named = index.named(facts.namespace, facts.namespace_labels, action, target)
        matched, errors = _conditions_met(named, facts)
        governing = [
            p for p in index.governing if p.selects(facts.namespace, facts.namespace_labels)
        ]
        if governing and not any(p.kind is PolicyKind.CLUSTER for p in matched):
            return _refused(
                facts.spec,
                governing,
                _ungoverned_message(action, target, facts.namespace, governing),
                errors,
                ungoverned=True,
            )
        if len(matched) > MAX_MATCHING:
            shown = ", ".join(p.ref for p in matched[:3])
            message = (
                f"{len(matched)} policies apply to this request ({shown}, ...) and at most "
                f"{MAX_MATCHING} may: merge some of them"
            )
            return _refused(facts.spec, matched[:MAX_MATCHING], message, errors)
        effective = combine(matched, facts.spec)
        refusal = ""
        if effective.outcome is Outcome.REFUSE:
            refusal = "; ".join(
                f"refused by {p.ref}" + (f": {p.message}" if p.message else "")
                for p in matched
                if p.outcome is Outcome.REFUSE
            )
        return PolicyDecision(effective.outcome, effective, effective.sources, refusal, errors)

    def _current(self) -> _Index:
        index = self._index
        if index is None:
            index = self._index = _Index.of(self._policies.values())
        return index


def _conditions_met(
    named: Sequence[CompiledPolicy], facts: RequestFacts
) -> tuple[list[CompiledPolicy], tuple[ConditionError, ...]]:
    """The policies whose condition holds; an erroring condition counts as holding unless the
    policy would auto-approve (strictness), and is reported."""
    needed = frozenset().union(*(p.condition.variables for p in named if p.condition))
    context = conditions.context(facts, needed) if needed else conditions.EMPTY_CONTEXT
    matched: list[CompiledPolicy] = []
    errors: list[ConditionError] = []
    deadline = time.perf_counter() + CONDITIONS_SECONDS
    for policy in named:
        if policy.condition is None:
            matched.append(policy)
            continue
        if time.perf_counter() < deadline:
            holds, error = policy.condition.holds(context, facts)
        else:
            holds, error = (
                False,
                (
                    f"condition not evaluated: this create's conditions took more than "
                    f"{CONDITIONS_SECONDS * 1000:.0f} ms"
                ),
            )
        if error:
            errors.append(ConditionError(policy.source, error))
            holds = policy.outcome is not Outcome.AUTO_APPROVE
        if holds:
            matched.append(policy)
    return matched, tuple(errors)


def _refused(
    spec: Mapping[str, Any],
    sources: Sequence[CompiledPolicy],
    message: str,
    errors: tuple[ConditionError, ...],
    *,
    ungoverned: bool = False,
) -> PolicyDecision:
    effective = replace(
        combine((), spec), outcome=Outcome.REFUSE, sources=tuple(p.source for p in sources)
    )
    return PolicyDecision(Outcome.REFUSE, effective, effective.sources, message, errors, ungoverned)


def _ungoverned_message(
    action: str, target: str, namespace: str, governing: Sequence[CompiledPolicy]
) -> str:
    refs = ", ".join(p.ref for p in governing)
    return (
        f"no ClusterApprovalPolicy matches action {action!r} on target {target!r} in namespace "
        f"{namespace!r}, which {refs} governs (governNamespaces: true): only what a cluster "
        "policy names may be requested there; ask your platform team for a policy"
    )
