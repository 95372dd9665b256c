"""The CEL conditions of approval policies: what they see, what is refused, how they fail.

A condition is a CEL expression over `request` {namespace, spec, requestedBy {user, groups}},
`plan` (Greenlight's reading, zero counts for a text plan) and `now` (a UTC timestamp),
evaluated by `common-expression-language` (docs/policy.md says why that library). `request.spec`
is the spec without `plan.details`: the plan is read through `plan`, Greenlight's own reading,
never through the requester's text (and converting up to 256 KiB for every create would be
most of the cost of evaluation).

`compile_condition` refuses, before a policy is ever used, a condition that does not parse,
names another variable, calls a function the library does not provide, returns something other
than a bool, or could cost more than a create can wait: conditions run on the admission path,
holding the interpreter while they run, so their shape is bounded (`shape_problem`).

`Condition.holds` never raises: any failure while evaluating comes back as an error message,
which the caller reads strictly (docs/policy.md, "An error while evaluating").
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from greenlight.core.imports import without_submodule
from greenlight.core.model import Identity
from greenlight.core.plans import PlanReading

with without_submodule("cel.cli"):
    import cel

VARIABLES = frozenset({"request", "plan", "now"})
MAX_LENGTH = 2048
# Comprehensions are where evaluation cost grows: each walks a list, one inside another
# multiplies, and `map` copies what it has built at every element (seconds for a list of a few
# hundred); list and map literals are what a condition can make long lists from.
COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})
REFUSED_COMPREHENSIONS = frozenset({"map"})
MAX_COMPREHENSIONS = 4
MAX_LITERAL_ITEMS = 64
# The CEL library compiles a `matches` pattern at every call (no cache), and some patterns cost
# far more than others to compile (`\\w{200}`: about 60 ms): a pattern must be a literal and is
# timed once at compile time; inside a comprehension, which runs it at every element, it must
# be cheaper still (a plain pattern such as '(^|[.])aws_db_instance[.]' takes about 0.04 ms).
MAX_MATCHES = 4
PATTERN_MS = 5.0
PATTERN_IN_COMPREHENSION_MS = 0.25
# No string of a spec the schema admits is longer (plan.details, which conditions never see,
# aside). Conditions run before the schema is checked, so a longer one is cut to one character
# more than this before a condition reads it: `matches` and `contains` cost what a valid spec
# costs, and the schema then refuses the create anyway (422, naming the field).
MAX_SPEC_CHARS = 1024
# The lists a comprehension can walk are bounded by the schemas (plan lists 50, spec lists 50)
# except the creator's groups: a condition reading `request` errors beyond this many.
MAX_GROUPS = 256
_MESSAGE_CUT = 512
_UNDEFINED = re.compile(r"Undefined variable or function: '([^']+)'")
_BOUND = re.compile(
    r"\b(?:" + "|".join(sorted(COMPREHENSIONS)) + r")\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,"
)


@dataclass(frozen=True, kw_only=True)
class RequestFacts:
    """What policy evaluation knows about a request being created."""

    namespace: str
    spec: Mapping[str, Any]  # the ApprovalRequest spec, as JSON
    requested_by: Identity
    now: datetime
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    plan: PlanReading | None = None  # Greenlight's reading of a machine-readable plan


@dataclass(frozen=True)
class Condition:
    """A compiled condition. `program` is None when it did not compile (`problem` says why):
    such a condition errors at every evaluation."""

    text: str
    program: cel.Program | None = field(compare=False, repr=False)
    variables: frozenset[str] = frozenset()  # which of VARIABLES it reads
    problem: str = ""

    def holds(self, context: cel.Context, facts: RequestFacts) -> tuple[bool, str]:
        """(result, error) on `context` (made by `context(facts, ...)`); on an error the
        result is False and the caller decides."""
        if self.program is None:
            return False, f"condition did not compile: {self.problem}"[:_MESSAGE_CUT]
        groups = len(facts.requested_by.groups)
        if "request" in self.variables and groups > MAX_GROUPS:
            return False, (
                f"condition not evaluated: the creator has {groups} groups, more than the "
                f"{MAX_GROUPS} a condition may walk"
            )
        try:
            result = self.program.execute(context)
        except Exception as error:  # any failure of a condition is reported, never raised
            kind = "no such key" if isinstance(error, KeyError) else type(error).__name__
            return False, f"condition failed: {kind}: {error}"[:_MESSAGE_CUT]
        if not isinstance(result, bool):
            return False, f"condition returned {_cel_type(result)}, not a bool"
        return result, ""


def compile_condition(text: str) -> Condition:
    """Compile a condition; raise ValueError saying what is wrong with it."""
    if len(text) > MAX_LENGTH:
        raise ValueError(f"is {len(text)} characters long; at most {MAX_LENGTH}")
    try:
        program = cel.compile(text)
    except ValueError as error:
        raise ValueError(f"CEL does not compile: {error}") from None
    problem = shape_problem(text)
    if problem is not None:
        raise ValueError(problem)
    bound = set(_BOUND.findall(text))
    unknown = sorted(set(program.variables()) - VARIABLES - bound)
    if unknown:
        raise ValueError(
            f"CEL names unknown variable {unknown[0]!r}: a condition can use request, plan and now"
        )
    _trial(program)
    return Condition(text, program, frozenset(program.variables()) & VARIABLES)


def shape_problem(text: str) -> str | None:
    """Why evaluating `text` could take too long, or None: `map`, more than MAX_COMPREHENSIONS
    comprehension macros, one inside another, a list or map literal of more than
    MAX_LITERAL_ITEMS items, or a `matches` that is costly (more than MAX_MATCHES, a pattern
    that is no literal or takes more than PATTERN_MS to compile, PATTERN_IN_COMPREHENSION_MS
    inside a comprehension).
    Strings and comments are skipped; `text` has compiled."""
    open_brackets: list[tuple[str, int]] = []  # (kind, items so far): "(", "[", "{", or a macro
    comprehensions = matches = 0
    i = 0
    while i < len(text):
        char = text[i]
        if char in "'\"":
            i = _after_string(text, i, raw=False)
        elif text.startswith("//", i):
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline + 1
        elif char.isalpha() or char == "_":
            word, i, calls = _word(text, i)
            if word.lower() in ("r", "b", "rb", "br") and i < len(text) and text[i] in "'\"":
                i = _after_string(text, i, raw="r" in word.lower())
            elif word == "matches" and calls:
                problem, i = _matches_problem(text, i, open_brackets, matches)
                if problem is not None:
                    return problem
                matches += 1
                open_brackets.append(("(", 1))
            elif word in COMPREHENSIONS and calls:
                if word in REFUSED_COMPREHENSIONS:
                    return (
                        f"CEL uses {word}, which copies the list it builds at every element; "
                        "use exists, all, exists_one or filter"
                    )
                if any(kind in COMPREHENSIONS for kind, _ in open_brackets):
                    return (
                        f"CEL has a comprehension ({word}) inside another; at most one level, "
                        "so that a condition stays cheap on every create"
                    )
                comprehensions += 1
                if comprehensions > MAX_COMPREHENSIONS:
                    return f"CEL has more than {MAX_COMPREHENSIONS} comprehensions (exists, ...)"
                open_brackets.append((word, 1))
            elif calls:
                open_brackets.append(("(", 1))
        else:
            problem = _bracket(char, open_brackets)
            if problem is not None:
                return problem
            i += 1
    return None


def _matches_problem(
    text: str, start: int, open_brackets: list[tuple[str, int]], before: int
) -> tuple[str | None, int]:
    """Why the `matches(` call whose argument starts at `start` is refused, or None; and the
    index after its pattern literal."""
    inside = any(kind in COMPREHENSIONS for kind, _ in open_brackets)
    limit = PATTERN_IN_COMPREHENSION_MS if inside else PATTERN_MS
    if before + 1 > MAX_MATCHES:
        return f"CEL calls matches more than {MAX_MATCHES} times", start
    i = start
    while i < len(text) and text[i].isspace():
        i += 1
    prefix = i
    while i < len(text) and text[i] in "rR":
        i += 1
    if i - prefix > 1 or i >= len(text) or text[i] not in "'\"":
        return "CEL matches takes a string literal as its pattern (not a value it computes)", i
    end = _after_string(text, i, raw=i > prefix)
    cost = _pattern_ms(text[prefix:end])
    if cost > limit:
        where = "at every element of a comprehension" if inside else "at every create"
        return (
            f"CEL pattern {text[prefix:end][:64]} takes {cost:.2f} ms to compile, and it is "
            f"compiled {where}; at most {limit:g} ms there (a smaller repetition, ASCII "
            "classes like [A-Za-z0-9_] instead of \\w)"
        ), end
    return None, end


def _pattern_ms(literal: str) -> float:
    """How long the CEL library takes to compile and run `literal` as a pattern (best of 5)."""
    try:
        program = cel.compile(f"''.matches({literal})")
    except ValueError:
        return 0.0  # the condition compiled, so this cannot happen; the trial run will tell
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        try:
            program.execute(EMPTY_CONTEXT)
        except Exception:  # an invalid pattern: the condition errors when evaluated
            return 0.0
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def _word(text: str, start: int) -> tuple[str, int, bool]:
    """The identifier at `start`, the index after it, and whether it is called: for a call,
    the index is after its opening parenthesis."""
    end = start
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    call = end
    while call < len(text) and text[call].isspace():
        call += 1
    if call < len(text) and text[call] == "(":
        return text[start:end], call + 1, True
    return text[start:end], end, False


def _bracket(char: str, open_brackets: list[tuple[str, int]]) -> str | None:
    if char in "([{":
        open_brackets.append((char, 1))
    elif char == "," and open_brackets:
        kind, items = open_brackets[-1]
        open_brackets[-1] = (kind, items + 1)
        if kind in ("[", "{") and items + 1 > MAX_LITERAL_ITEMS:
            what = "list" if kind == "[" else "map"
            return f"CEL has a {what} literal of more than {MAX_LITERAL_ITEMS} items"
    elif char in ")]}" and open_brackets:
        open_brackets.pop()
    return None


def _after_string(text: str, start: int, *, raw: bool) -> int:
    """The index after the string literal whose opening quote is at `start`."""
    quote = text[start]
    if text.startswith(quote * 3, start):
        end = text.find(quote * 3, start + 3)
        return len(text) if end < 0 else end + 3
    i = start + 1
    while i < len(text):
        if text[i] == "\\" and not raw:
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return len(text)


def _trial(program: cel.Program) -> None:
    """Run the condition once on an empty request: a function the library does not provide
    shows only at run time, and so does a result that is not a bool."""
    try:
        result = program.execute(EMPTY_CONTEXT)
    except RuntimeError as error:
        undefined = _UNDEFINED.search(str(error))
        if undefined and undefined.group(1) not in VARIABLES:
            raise ValueError(
                f"CEL calls {undefined.group(1)!r}, which the CEL library does not provide "
                "with these arguments (docs/policy.md lists the functions)"
            ) from None
        return
    except Exception:  # a missing key or a type error on the empty request: fine here
        return
    if not isinstance(result, bool):
        raise ValueError(f"CEL must return a bool, and returns {_cel_type(result)}")


def variables(facts: RequestFacts) -> dict[str, Any]:
    """The CEL variables of a condition about this request (docs/policy.md, Conditions)."""
    spec = facts.spec
    plan = facts.plan
    raw_plan = spec.get("plan")
    plan_format = str(raw_plan.get("format") or "text") if isinstance(raw_plan, Mapping) else "text"
    seen = _plain(spec)
    if isinstance(seen.get("plan"), dict):
        seen["plan"].pop("details", None)
    return {
        "request": {
            "namespace": facts.namespace,
            "spec": seen,
            "requestedBy": {
                "user": facts.requested_by.user,
                "groups": list(facts.requested_by.groups),
            },
        },
        "plan": {
            "format": plan.format if plan else plan_format,
            "creates": plan.creates if plan else 0,
            "updates": plan.updates if plan else 0,
            "deletes": plan.deletes if plan else 0,
            "replaces": plan.replaces if plan else 0,
            "destroyed": list(plan.destroyed) if plan else [],
            "resourceTypes": list(plan.resource_types) if plan else [],
            "truncated": plan.truncated if plan else False,
        },
        "now": facts.now,
    }


def context(facts: RequestFacts, names: Iterable[str]) -> cel.Context:
    """The variables `names` for this request, converted once for every condition that reads
    them (converting is most of a condition's cost; executing on a context is ~1 µs)."""
    values = variables(facts)
    return cel.Context({name: values[name] for name in names})


def _plain(value: Any) -> Any:
    """JSON-shaped value as plain dicts and lists (what the CEL library converts), every string
    cut to MAX_SPEC_CHARS + 1 characters."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str) and len(value) > MAX_SPEC_CHARS:
        return value[: MAX_SPEC_CHARS + 1]
    return value


def _cel_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {str: "a string", int: "an int", float: "a double", list: "a list", dict: "a map"}
    return names.get(type(value), type(value).__name__)


EMPTY_CONTEXT = cel.Context(
    variables(
        RequestFacts(
            namespace="", spec={}, requested_by=Identity(""), now=datetime(1970, 1, 1, tzinfo=UTC)
        )
    )
)
