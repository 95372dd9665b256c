"""Property tests of the pure core: no input that the API server can hand it makes it raise."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.marks import reconcile, signed, stamp

from greenlight.core import audit
from greenlight.core.model import ANN_REQUESTED_BY, Action, Phase, Via
from greenlight.core.stamps import DecisionRecord, record_key
from greenlight.core.timefmt import format_precise, format_time

USERS = st.sampled_from(["alice", "bob", "carol", "system:serviceaccount:ci:runner", "ü-ser"])
MOMENTS = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
TIMEOUTS = st.sampled_from(["1m", "30m", "1h", "1h30m", "2d", "7d", "90s", "168h"])


@st.composite
def decision_annotations(draw: st.DrawFn) -> dict[str, str]:
    """Decision records as the webhook writes them, plus malformed ones."""
    annotations: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 4))):
        user = draw(USERS)
        if draw(st.booleans()):
            record = DecisionRecord(
                user=user,
                action=draw(st.sampled_from(list(Action))),
                at=draw(MOMENTS),
                via=draw(st.sampled_from([Via.KUBECTL, Via.SLACK])),
                reason=draw(st.text(max_size=20)),
            )
            key, value = signed(record, "uid-1")
            annotations[key] = value if draw(st.booleans()) else record.to_annotation()
        else:
            annotations[record_key(user)] = draw(
                st.one_of(st.text(max_size=40), st.just("{}"), st.just('{"user": 1}'))
            )
    if draw(st.booleans()):
        annotations[ANN_REQUESTED_BY] = draw(
            st.one_of(
                USERS.map(lambda u: json.dumps({"user": u, "groups": []})), st.text(max_size=30)
            )
        )
    return annotations


@st.composite
def approval_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Objects shaped like the CRD allows, with a status the operator may or may not have
    written (including the approvals and decision of an earlier transition)."""
    created = draw(MOMENTS)
    spec: dict[str, Any] = {
        "action": draw(st.text(min_size=1, max_size=50)),
        "target": draw(st.text(min_size=1, max_size=50)),
        "requester": {"workflowId": "wf-1", "onBehalfOf": draw(st.one_of(st.just(""), USERS))},
        "timeout": draw(TIMEOUTS),
        "policy": {"requiredApprovals": draw(st.integers(1, 10))},
        "plan": {"details": draw(st.text(max_size=100))},
    }
    if draw(st.booleans()):
        spec["policy"]["approvers"] = {
            "users": draw(st.lists(USERS, max_size=3, unique=True)),
            "groups": draw(st.lists(st.sampled_from(["ops", "sre"]), max_size=2, unique=True)),
        }
    obj: dict[str, Any] = {
        "metadata": {
            "namespace": "ns",
            "name": "req",
            "uid": "uid-1",
            "creationTimestamp": format_time(created),
            "annotations": draw(decision_annotations()),
        },
        "spec": spec,
    }
    if draw(st.booleans()):
        obj["metadata"]["annotations"][ANN_REQUESTED_BY] = stamp(obj, draw(USERS))
    if draw(st.booleans()):
        initial = reconcile(obj, created).status
        if draw(st.booleans()):
            initial["phase"] = draw(st.sampled_from(list(Phase))).value
            if initial["phase"] != "Pending":
                initial["decision"] = {
                    "outcome": initial["phase"],
                    "by": draw(USERS),
                    "at": format_time(draw(MOMENTS)),
                    "via": "kubectl",
                    "reason": "",
                }
        initial["approvals"] = [
            {"user": u, "at": format_time(created), "via": "kubectl", "reason": ""}
            for u in draw(st.lists(USERS, max_size=3, unique=True))
        ]
        obj["status"] = initial
    return obj


@settings(max_examples=300, deadline=None)
@given(approval_requests(), st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9)))
def test_reconcile_never_raises_and_terminal_phases_never_change(
    obj: dict[str, Any], later: timedelta
) -> None:
    now = datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    transition = reconcile(obj, now + later)
    before = (obj.get("status") or {}).get("phase")
    if before and Phase(before).terminal:
        assert transition.status["phase"] == before
        assert transition.status.get("decision") == obj["status"].get("decision")
    assert Phase(transition.status["phase"])


@settings(max_examples=300, deadline=None)
@given(approval_requests(), st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9)))
def test_reconcile_is_idempotent(obj: dict[str, Any], later: timedelta) -> None:
    """Running it again on its own output changes nothing: a restart never doubles a step."""
    now = datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    first = reconcile(obj, now + later)
    again = reconcile({**obj, "status": first.status}, now + later)
    assert not again.changes({**obj, "status": first.status})
    assert again.entered is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000), st.one_of(st.none(), st.binary(min_size=1, max_size=32)))
def test_audit_verify_never_raises_on_arbitrary_bytes(data: bytes, key: bytes | None) -> None:
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    result = audit.verify(lines, key=key, head=audit.Head(seq=1, hash="0" * 64))
    assert isinstance(result.ok, bool)
    if not result.ok:
        assert result.message


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.text(max_size=10),
            st.one_of(st.none(), st.integers(), st.text(max_size=20), st.floats(allow_nan=False)),
            max_size=5,
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 5),
    st.sampled_from(["seq", "prev", "hash", "mac", "time"]),
)
def test_audit_verify_finds_any_edit_to_a_sealed_chain(
    records: list[dict[str, Any]], victim: int, field: str
) -> None:
    key = b"k" * 32
    lines, prev = [], audit.GENESIS
    for seq, fields in enumerate(records, start=1):
        sealed = audit.seal(
            {"time": format_precise(datetime.now(UTC)), **fields}, seq=seq, prev=prev, key=key
        )
        prev = sealed["hash"]
        lines.append(sealed)
    intact = [json.dumps(r, sort_keys=True) + "\n" for r in lines]
    assert audit.verify(intact, key=key).ok
    index = victim % len(lines)
    edited = dict(lines[index])
    edited[field] = "tampered"
    intact[index] = json.dumps(edited, sort_keys=True) + "\n"
    result = audit.verify(intact, key=key)
    assert not result.ok
    assert result.bad_line == index + 1
