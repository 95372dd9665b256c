"""Generated admission reviews against the webhook handlers, in-process (adapters/admission.py).

`old` and `new` are plausible ApprovalRequests with random annotation changes (decisions,
reasons, forged stamps and records, huge values) or arbitrary JSON in the wrong places (missing
metadata, lists for mappings, numbers for names); the caller is a person, the operator, or
nonsense. Whatever arrives, a handler answers (returns, or refuses with kopf.AdmissionError),
never writes an `allowed` audit record, and every refusal it writes stays small.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from tests.support.fakekube import OPERATOR, FakeKube, create_request
from tests.support.marks import KEY, signed

from greenlight.adapters.admission import (
    AdmissionGate,
    admit,
    check_owned_annotations,
    note_deletion,
    protect_status,
)
from greenlight.adapters.auditlog import AuditLog
from greenlight.adapters.ledger import Ledger
from greenlight.adapters.policyindex import PolicyIndex
from greenlight.adapters.refusals import RefusalLog
from greenlight.core.model import (
    ANN_CANCEL,
    ANN_DECISION,
    ANN_REASON,
    ANN_REQUESTED_BY,
    ANN_TRACEPARENT,
    DECISION_RECORD_PREFIX,
    Action,
    Via,
)
from greenlight.core.stamps import DecisionRecord, record_key
from greenlight.core.timefmt import now

NS = "ci"
NAME = "destroy-prod"
HUGE = "\u2500" * 200_000
MAX_LINE = 4096
# kopf's decorators type a handler as `kopf.WebhookFn` (every kwarg required, a sync-or-async
# result); these are async functions called with the kwargs they read.
Handler = Callable[..., Any]

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.just(HUGE),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
USERS = st.sampled_from(["alice", "bob", "mallory", "Alice ", "\u0430lice", OPERATOR.user, ""])
ANNOTATION_KEYS = st.sampled_from(
    [
        ANN_DECISION,
        ANN_REASON,
        ANN_CANCEL,
        ANN_REQUESTED_BY,
        ANN_TRACEPARENT,
        record_key("bob"),
        record_key("mallory"),
        "example.com/other",
    ]
)


def record_value(user: str, uid: str, action: Action, *, sign: bool) -> str:
    record = DecisionRecord(user=user, action=action, at=now(), via=Via.KUBECTL, reason="why")
    return signed(record, uid)[1] if sign else record.to_annotation()


@st.composite
def annotation_values(draw: st.DrawFn) -> Any:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.sampled_from(["approve", "deny", "true", " Approve ", "no", "", HUGE]))
    if choice == 1:
        user = draw(USERS)
        uid = draw(st.sampled_from(["uid-1", "uid-other", ""]))
        return record_value(
            user, uid, draw(st.sampled_from(list(Action))), sign=draw(st.booleans())
        )
    if choice == 2:
        return draw(st.text(max_size=60))
    if choice == 3:
        return json.dumps(draw(JSON))[:1000]
    return draw(JSON)  # not even a string


@st.composite
def userinfos(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.dictionaries(st.sampled_from(["username", "groups", "uid", "extra"]), JSON))
    info: dict[str, Any] = {"username": draw(USERS | st.text(max_size=20) | st.just(HUGE))}
    if draw(st.booleans()):
        info["groups"] = draw(st.lists(st.sampled_from(["approvers", "system:masters", HUGE])))
    if draw(st.booleans()):
        info["extra"] = {"scopes": draw(st.lists(st.text(max_size=10), max_size=3))}
    return info


def changed(body: Mapping[str, Any], annotations: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(body))
    meta = out.setdefault("metadata", {})
    current = dict(meta.get("annotations") or {})
    for key, value in annotations.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
    meta["annotations"] = current
    return out


@st.composite
def bodies(draw: st.DrawFn, base: Mapping[str, Any]) -> Any:
    """None, the stored request, a changed copy of it, a mangled copy, or arbitrary JSON."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return None
    if choice == 1:
        return copy.deepcopy(dict(base))
    if choice in (2, 3):
        edits = draw(st.dictionaries(ANNOTATION_KEYS, annotation_values() | st.none(), max_size=3))
        return changed(base, edits)
    if choice == 4:
        mangled = copy.deepcopy(dict(base))
        part = draw(st.sampled_from(["metadata", "spec", "status", "annotations", "timestamp"]))
        junk = draw(JSON)
        if part == "annotations":
            mangled["metadata"]["annotations"] = junk
        elif part == "timestamp":
            mangled["metadata"]["creationTimestamp"] = junk
        elif junk is None:
            mangled.pop(part, None)
        else:
            mangled[part] = junk
        return mangled
    return draw(st.dictionaries(st.sampled_from(["metadata", "spec", "status", "kind"]), JSON))


@dataclass(frozen=True)
class Review:
    operation: Any
    userinfo: Any
    old: Any
    new: Any
    dryrun: bool


def stored_request() -> dict[str, Any]:
    kube = FakeKube()
    return create_request(kube, NS, NAME, uid="uid-1")


BASE = stored_request()


@st.composite
def reviews(draw: st.DrawFn) -> Review:
    """Half of them a decision on the stored request (old as stored, new with changed
    annotations), the rest anything at all."""
    base = stored_request()
    if draw(st.booleans()):
        edits = draw(st.dictionaries(ANNOTATION_KEYS, annotation_values() | st.none(), max_size=2))
        decision = draw(st.sampled_from([{ANN_DECISION: "approve"}, {ANN_DECISION: "deny"}, {}]))
        decider = draw(st.sampled_from(["bob", "alice", "mallory", OPERATOR.user]))
        return Review(
            operation="UPDATE",
            userinfo=draw(st.just({"username": decider}) | userinfos()),
            old=base,
            new=changed(base, {**decision, **edits}),
            dryrun=draw(st.booleans()),
        )
    return Review(
        operation=draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT", None, ""])),
        userinfo=draw(userinfos()),
        old=draw(bodies(base)),
        new=draw(bodies(base)),
        dryrun=draw(st.booleans()),
    )


async def answer(handler: Handler, review: Review, memo: kopf.Memo) -> str:
    """Call one handler as kopf would: "refused", "issued" (a decision record in the patch)
    or "ok"."""
    patch = kopf.Patch()
    try:
        await handler(
            operation=review.operation,
            userinfo=review.userinfo,
            old=review.old,
            new=review.new,
            patch=patch,
            dryrun=review.dryrun,
            memo=memo,
        )
    except kopf.AdmissionError:
        return "refused"
    annotations = (patch.get("metadata") or {}).get("annotations") or {}
    issued = any(k.startswith(DECISION_RECORD_PREFIX) and v for k, v in annotations.items())
    return "issued" if issued else "ok"


async def run_review(review: Review, directory: Path) -> list[str]:
    kube = FakeKube()
    create_request(kube, NS, NAME, uid="uid-1")
    kube.allow("bob", "approve", NS)
    kube.allow("bob", "deny", NS)
    audit = AuditLog(directory / "audit.log", key=b"k" * 32)
    refusals = RefusalLog(audit, window=0.0)  # every refusal is written: all are checked
    ledger = Ledger()
    memo = kopf.Memo(gate=AdmissionGate(kube, refusals, ledger, KEY, OPERATOR, PolicyIndex.fixed()))
    try:
        return [
            await answer(handler, review, memo)
            for handler in (admit, check_owned_annotations, protect_status, note_deletion)
        ]
    finally:
        await refusals.close()
        audit.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(review=reviews())
@example(  # an allowed decision, every run: the path that issues a record writes no audit
    review=Review(
        "UPDATE", {"username": "bob"}, BASE, changed(BASE, {ANN_DECISION: "approve"}), False
    )
)
def test_a_review_is_answered_or_refused_and_never_audited_as_allowed(review: Review) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        answers = asyncio.run(run_review(review, directory))
        log = directory / "audit.log"
        lines = log.read_bytes().splitlines() if log.exists() else []

    event(f"answers: {answers}")
    event(f"audit records: {min(len(lines), 3)}")
    assert set(answers) <= {"ok", "issued", "refused"}
    for line in lines:
        assert len(line) < MAX_LINE, f"an audit record of {len(line)} bytes"
        record = json.loads(line)
        assert record["outcome"] == "refused", record
        assert record["event"] == "decision_attempted"
    assert len(lines) <= answers.count("refused")
