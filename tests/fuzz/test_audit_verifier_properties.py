"""The audit verifier over random cuts, edits and head/anchor states: it never raises, it
passes exactly the logs that hold everything their head and anchor vouch for, and a log cut
short of either names the first missing record."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenlight.core import audit

KEY = b"k" * 64


def sealed_chain(count: int) -> list[dict[str, Any]]:
    records, prev = [], audit.GENESIS
    for seq in range(1, count + 1):
        record = audit.seal(
            {"event": "decided", "actor": f"user-{seq}", "time": f"t{seq}"},
            seq=seq,
            prev=prev,
            key=KEY,
        )
        prev = record["hash"]
        records.append(record)
    return records


def line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True) + "\n"


@dataclass(frozen=True)
class Reference:
    """A head or anchor as the test built it: where it points, and whether its MAC is valid."""

    head: audit.Head
    authentic: bool


@st.composite
def references(draw: st.DrawFn, records: list[dict[str, Any]]) -> Reference | None:
    kind = draw(st.sampled_from(["none", "current", "earlier", "unmaced", "forged"]))
    if kind == "none":
        return None
    seq = len(records) if kind != "earlier" else draw(st.integers(0, len(records)))
    digest = records[seq - 1]["hash"] if seq else audit.GENESIS
    if kind == "unmaced":
        return Reference(audit.Head(seq, digest), False)
    if kind == "forged":
        return Reference(audit.make_head(seq, digest, b"not-the-key"), False)
    return Reference(audit.make_head(seq, digest, KEY), True)


TAMPERING = ["none", "cut", "cut_mid_line", "edit", "delete", "swap", "append"]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_verifier_passes_exactly_the_logs_their_head_and_anchor_vouch_for(
    data: st.DataObject,
) -> None:
    records = sealed_chain(data.draw(st.integers(0, 7), label="records"))
    head = data.draw(references(records), label="head")
    anchor = data.draw(references(records), label="anchor")
    tamper = data.draw(st.sampled_from(TAMPERING), label="tamper")
    lines = [line(r) for r in records]
    kept = len(records)  # whole records left, in order and untouched
    record_damage = False
    if tamper == "cut":
        kept = data.draw(st.integers(0, len(records)), label="cut at")
        lines = lines[:kept]
    elif tamper == "cut_mid_line" and records:
        lines[-1] = lines[-1][: data.draw(st.integers(1, len(lines[-1]) - 1), label="cut at")]
        record_damage = True
    elif tamper == "edit" and records:
        index = data.draw(st.integers(0, len(records) - 1), label="edited")
        field = data.draw(st.sampled_from(["actor", "seq", "prev", "hash", "mac"]), label="field")
        lines[index] = line({**records[index], field: "mallory"})
        record_damage = True
    elif tamper == "delete" and len(records) > 1:
        index = data.draw(st.integers(0, len(records) - 2), label="deleted")
        del lines[index]
        record_damage = True
    elif tamper == "swap" and len(records) > 1:
        index = data.draw(st.integers(0, len(records) - 2), label="swapped")
        lines[index], lines[index + 1] = lines[index + 1], lines[index]
        record_damage = True
    elif tamper == "append":
        last: dict[str, Any] = records[-1] if records else {"seq": 0, "hash": audit.GENESIS}
        forged = audit.seal(
            {"event": "decided", "actor": "mallory"},
            seq=last["seq"] + 1,
            prev=last["hash"],
            key=b"guess",
        )
        lines.append(line(forged))
        record_damage = True

    result = audit.verify(
        lines,
        key=KEY,
        head=head.head if head else None,
        anchor=anchor.head if anchor else None,
        require_anchor=True,
    )

    given_refs = [r for r in (head, anchor) if r is not None]
    vouched = max((r.head.seq for r in given_refs), default=0)
    head_matches_end = head is None or head.head.seq == kept
    expected_ok = (
        not record_damage
        and bool(given_refs)
        and all(r.authentic for r in given_refs)
        and kept >= vouched
        and head_matches_end
    )
    assert result.ok == expected_ok, result.message
    if result.ok:
        assert result.records == kept
        return
    assert result.message
    if not given_refs and not record_damage:
        assert result.message == audit.UNANCHORED
    truncated = not record_damage and all(r.authentic for r in given_refs) and kept < vouched
    if truncated:
        assert result.missing == kept + 1
        assert f"record {kept + 1} is the first one missing" in result.message


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=70),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.sampled_from(["seq", "hash", "mac", "x"]), inner, max_size=4)
            ),
            max_leaves=8,
        ).map(json.dumps),
    )
)
def test_any_head_text_is_a_head_or_a_head_error(text: str) -> None:
    try:
        head: audit.Head | audit.HeadError = audit.parse_head_text(text, source="head")
    except audit.HeadError as exc:
        head = exc
    if isinstance(head, audit.HeadError):
        assert str(head).startswith("head")
        return
    assert head.seq >= 0
    assert len(head.hash) == 64


@pytest.mark.parametrize("count", [0, 1, 5])
def test_intact_chain_with_its_own_head_and_anchor_verifies(count: int) -> None:
    records = sealed_chain(count)
    end = records[-1]["hash"] if records else audit.GENESIS
    head = audit.make_head(count, end, KEY)

    result = audit.verify([line(r) for r in records], key=KEY, head=head, anchor=head)

    assert result.ok, result.message
