"""The audit chain: records written by the file sink verify; every kind of tampering is named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.support import tampering

from greenlight.adapters.auditlog import AuditLog, AuditWriteError, Entry, head_path, read_head
from greenlight.core import audit

KEY = b"k" * 64
REQUEST = {"namespace": "ci", "name": "destroy-prod", "uid": "uid-1", "spec": {"action": "x"}}


async def write_log(path: Path, records: int = 5, *, key: bytes | None = KEY) -> AuditLog:
    log = AuditLog(path, key=key)
    events = ["requested", "notified", "decision_attempted", "decided", "expired", "cancelled"]
    for number in range(records):
        await log.record(
            events[number % len(events)],
            request=REQUEST,
            actor=f"user-{number}",
            outcome="allowed",
            event_id=f"uid-1:{number}",
        )
    return log


def lines_of(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return handle.readlines()


async def test_log_written_by_the_sink_verifies_with_key_and_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path)

    result = audit.verify(lines_of(path), key=KEY, head=read_head(path))

    assert result.ok, result.message
    assert result.records == 5
    assert result.message == "5 records, chain intact"


async def test_every_record_chains_to_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path, 3)

    records = [json.loads(line) for line in lines_of(path)]

    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[0]["prev"] == audit.GENESIS
    assert [r["prev"] for r in records[1:]] == [r["hash"] for r in records[:-1]]
    assert set(records[0]) >= {
        "time",
        "event",
        "event_id",
        "actor",
        "outcome",
        "reason",
        "request",
        "details",
        "seq",
        "prev",
        "hash",
        "mac",
    }


async def test_event_written_twice_is_recorded_once(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", key=KEY)

    first = await log.record("requested", request=REQUEST, actor="a", outcome="ok", event_id="e")
    again = await log.record("requested", request=REQUEST, actor="a", outcome="ok", event_id="e")

    assert (first, again) == (True, False)
    assert len(lines_of(log.path)) == 1


async def test_records_queued_together_are_one_write_and_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", key=KEY)
    await log.record("requested", request=REQUEST, actor="a", outcome="ok", event_id="e0")
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def counted_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counted_fsync)

    written = await log.record_all(
        [
            Entry("decision_attempted", REQUEST, "alice", "allowed", event_id="e1"),
            Entry("decided", REQUEST, "alice", "Approved", event_id="e2"),
            Entry("requested", REQUEST, "a", "ok", event_id="e0"),  # written before
            Entry("receipt_issued", REQUEST, "greenlight", "issued", event_id="e3"),
            Entry("decided", REQUEST, "alice", "Approved", event_id="e2"),  # twice in one call
        ]
    )

    assert written == [True, True, False, True, False]
    assert len(fsyncs) == 2  # the log, then the head file: one group
    lines = lines_of(log.path)
    assert [json.loads(line)["event"] for line in lines] == [
        "requested",
        "decision_attempted",
        "decided",
        "receipt_issued",
    ]
    assert audit.verify(lines, key=KEY, head=read_head(log.path)).ok


async def test_records_queued_together_fail_together_and_leave_no_trace(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 2)
    path.unlink()
    path.mkdir()
    entries = [
        Entry("decided", REQUEST, "alice", "Approved", event_id="d"),
        Entry("receipt_issued", REQUEST, "greenlight", "issued", event_id="r"),
    ]

    with pytest.raises(AuditWriteError, match="cannot write audit record to"):
        await log.record_all(entries)

    assert not log.has("d")
    assert not log.has("r")
    path.rmdir()
    path.write_text("")
    assert await log.record_all(entries) == [True, True]
    assert [json.loads(line)["seq"] for line in lines_of(path)] == [3, 4]


async def test_reopened_log_continues_the_chain_and_remembers_events(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path, 2)

    reopened = AuditLog(path, key=KEY)
    duplicate = await reopened.record(
        "requested", request=REQUEST, actor="x", outcome="ok", event_id="uid-1:0"
    )
    await reopened.record("decided", request=REQUEST, actor="alice", outcome="Approved")

    assert duplicate is False
    result = audit.verify(lines_of(path), key=KEY, head=read_head(path))
    assert result.ok, result.message
    assert result.records == 3


async def test_unknown_event_is_a_programming_error(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")

    with pytest.raises(ValueError, match="unknown audit event 'approved'"):
        await log.record("approved", request=None, actor="a", outcome="ok")


async def test_unwritable_log_raises_and_does_not_advance_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 2)
    path.unlink()
    path.mkdir()

    with pytest.raises(AuditWriteError, match="cannot write audit record to"):
        await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")

    path.rmdir()
    path.write_text("")
    await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")
    assert json.loads(lines_of(path)[0])["seq"] == 3


TAMPERING: dict[str, tuple[tampering.Tamper, str]] = {
    "edit-first": (tampering.edit(0), "content does not match its hash (the record was edited)"),
    "edit-middle": (tampering.edit(2), "content does not match its hash (the record was edited)"),
    "delete-first": (tampering.delete(0), "sequence 2 where 1 was expected"),
    "delete-middle": (tampering.delete(2), "sequence 4 where 3 was expected"),
    "reorder": (tampering.reorder(1), "sequence 3 where 2 was expected"),
    "truncate-mid-line": (
        tampering.truncate_mid_line,
        "last record is cut short (the file was truncated)",
    ),
    "truncate-at-record-boundary": (
        tampering.truncate_at_boundary,
        "log ends at record 4 but the head file records 5: the log was truncated",
    ),
    "append-forged": (tampering.append_forged, "MAC does not match the audit key"),
    "rewrite-tail-with-recomputed-hash": (
        tampering.rewrite_tail,
        "MAC does not match the audit key (forged record)",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
async def test_tampered_log_fails_and_names_the_first_bad_line(tmp_path: Path, case: str) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path)
    tamper, why = TAMPERING[case]
    lines, bad_line = tamper(lines_of(path))

    result = audit.verify(lines, key=KEY, head=read_head(path))

    assert not result.ok
    assert result.bad_line == bad_line
    assert why in result.message


async def test_forged_append_without_key_is_caught_by_the_head_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path)
    lines, _ = tampering.append_forged(lines_of(path))

    result = audit.verify(lines, head=read_head(path))

    assert not result.ok
    assert result.bad_line == 6
    assert "record 6 and later were appended outside the operator" in result.message


async def test_forged_append_with_a_forged_head_is_caught_only_by_the_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path)
    lines, _ = tampering.append_forged(lines_of(path))
    forged = json.loads(lines[-1])
    head = audit.Head(forged["seq"], forged["hash"])

    assert audit.verify(lines, head=head).ok
    keyed = audit.verify(lines, key=KEY, head=head)
    assert not keyed.ok
    assert keyed.bad_line == 6


async def test_head_that_disagrees_with_the_last_record_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path)

    result = audit.verify(lines_of(path), head=audit.Head(5, "f" * 64))

    assert not result.ok
    assert result.message == "last record does not match the head file"


async def test_wrong_key_fails_at_the_first_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path)

    result = audit.verify(lines_of(path), key=b"not-the-key")

    assert not result.ok
    assert result.bad_line == 1
    assert "MAC does not match the audit key" in result.message


@pytest.mark.parametrize(
    ("line", "why"),
    [("\n", "empty line inside the log"), ("[1]\n", "not a JSON object"), ("{\n", "not valid")],
)
async def test_garbage_line_is_named(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path, 2)
    lines = lines_of(path)
    lines.insert(1, line)

    result = audit.verify(lines, key=KEY)

    assert (result.ok, result.bad_line) == (False, 2)
    assert why in result.message


def test_empty_log_verifies_as_zero_records() -> None:
    assert audit.verify([]) == audit.Verification(True, 0, "0 records, chain intact")


async def test_head_file_is_replaced_atomically_next_to_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path, 3)

    head = json.loads(head_path(path).read_text())

    last = json.loads(lines_of(path)[-1])["hash"]
    assert head == {"seq": 3, "hash": last, "mac": audit.head_mac(KEY, 3, last)}
    assert sorted(os.listdir(tmp_path)) == ["audit.jsonl", "audit.jsonl.head", "audit.jsonl.lock"]
