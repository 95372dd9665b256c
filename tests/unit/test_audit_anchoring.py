"""A record that cannot be cut silently: MACed heads, anchors, the unanchored verdict, the
writer's guarantees (short writes, failed head writes, torn lines, one writer) and the reset."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support import tampering

from greenlight import cli
from greenlight.adapters import auditanchor, auditlog
from greenlight.adapters.auditlog import (
    AuditChainBroken,
    AuditLog,
    AuditLogTruncated,
    AuditWriteError,
    Entry,
    head_path,
    lock_path,
    read_head,
)
from greenlight.config import Settings
from greenlight.core import audit
from greenlight.telemetry import metrics

KEY = b"k" * 64
REQUEST = {"namespace": "ci", "name": "destroy-prod", "uid": "uid-1", "spec": {"action": "x"}}


async def write_log(path: Path, records: int = 5, *, key: bytes | None = KEY) -> AuditLog:
    log = AuditLog(path, key=key)
    for number in range(records):
        await log.record(
            "decision_attempted", request=REQUEST, actor=f"user-{number}", outcome="allowed"
        )
    return log


def lines_of(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return handle.readlines()


def seqs(path: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in lines_of(path)]


def verify_file(path: Path, **checks: Any) -> audit.Verification:
    return audit.verify(lines_of(path) if path.exists() else [], key=KEY, **checks)


# The verifier


async def test_head_is_maced_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path, 3)

    head = read_head(path)

    assert head is not None
    assert head.seq == 3
    assert audit.head_is_authentic(head, KEY)
    assert verify_file(path, head=head, require_anchor=True).ok


async def test_log_without_head_or_anchor_is_unanchored(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path, 3)

    result = verify_file(path, require_anchor=True)

    assert not result.ok
    assert result.message == audit.UNANCHORED
    assert result.records == 3


async def test_cut_tail_with_a_rewritten_head_is_caught_by_the_head_mac(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path, 5)
    lines = lines_of(path)[:3]
    last = json.loads(lines[-1])
    forged = audit.Head(3, last["hash"], last["mac"])  # a record's MAC presented as the head's

    result = audit.verify(lines, key=KEY, head=forged)

    assert not result.ok
    assert result.message == "the head file MAC does not match the audit key (forged or replaced)"


async def test_head_without_mac_fails_with_the_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_log(path, 2)
    head = read_head(path)
    assert head is not None

    result = verify_file(path, head=audit.Head(head.seq, head.hash))

    assert not result.ok
    assert "the head file carries no MAC" in result.message


async def test_log_shorter_than_its_anchor_names_the_first_missing_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 5)
    anchor = log.head
    path.write_text("".join(lines_of(path)[:2]))

    result = verify_file(path, anchor=anchor)

    assert not result.ok
    assert result.missing == 3
    assert result.message == (
        "log ends at record 2 but the anchor records 5: "
        "the log was truncated (record 3 is the first one missing)"
    )


async def test_emptied_log_fails_against_its_anchor(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 2)
    path.write_text("")

    result = verify_file(path, anchor=log.head)

    assert (result.ok, result.missing) == (False, 1)


async def test_log_that_went_on_past_its_anchor_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 2)
    anchor = log.head
    await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")

    assert verify_file(path, anchor=anchor, head=read_head(path)).ok


async def test_log_replaced_under_its_anchor_is_reported(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    anchor = (await write_log(first, 3)).head
    await write_log(second, 4)

    result = verify_file(second, anchor=anchor)

    assert not result.ok
    assert result.message == "record 3 does not match the anchor (the log was replaced)"


async def test_anchor_with_a_bad_mac_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 2)
    forged = audit.Head(log.head.seq, log.head.hash, "0" * 64)

    result = verify_file(path, anchor=forged)

    assert not result.ok
    assert result.message == "the anchor MAC does not match the audit key (forged or replaced)"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{}", "seq must be a whole number >= 0, not None"),
        ("not json", "is not valid JSON"),
        ("[1, 2]", "is not a JSON object with seq and hash"),
        ('{"seq": "3", "hash": "x"}', "hash must be 64 lowercase hex digits, not 'x'"),
        ('{"seq": true, "hash": "' + "a" * 64 + '"}', "seq must be a whole number >= 0"),
        ('{"seq": -1, "hash": "' + "a" * 64 + '"}', "seq must be a whole number >= 0"),
        ('{"seq": 1, "hash": "' + "a" * 64 + '", "mac": 7}', "mac must be 64 lowercase hex"),
        ('{"seq": 0, "hash": "' + "a" * 64 + '"}', "seq 0 must carry the genesis hash"),
        ('{"seq": "\u00b2", "hash": "' + "a" * 64 + '"}', "seq must be a whole number >= 0"),
        ('{"seq": "' + "9" * 5000 + '", "hash": "x"}', "seq must be a whole number >= 0"),
        ('{"seq": ' + "9" * 5000 + "}", "is not valid JSON"),
        ('{"seq": ' + str(2**63) + ', "hash": "' + "a" * 64 + '"}', "seq must be a whole"),
    ],
)
def test_malformed_head_is_a_head_error_naming_the_field(text: str, why: str) -> None:
    with pytest.raises(audit.HeadError, match=r"^the head") as caught:
        audit.parse_head_text(text, source="the head")

    assert why in str(caught.value)


# `greenlight audit verify`


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()  # what writing the log printed
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_exit_codes_ok_tampered_unanchored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    (tmp_path / "audit.key").write_bytes(KEY)
    (await write_log(path, 3)).close()
    key = ["--key-file", str(tmp_path / "audit.key")]

    code, _, err = run_cli(["audit", "verify", str(path), *key], capsys)
    assert (code, err) == (0, "")
    code, _, err = run_cli(["audit", "verify", str(path)], capsys)  # no key: the chain only
    assert code == 0
    assert "only the hash chain was checked, not the records' MACs" in err
    kept = tmp_path / "kept.head"
    head_path(path).rename(kept)
    code, _, err = run_cli(["audit", "verify", str(path), *key], capsys)
    assert code == cli.EXIT_UNANCHORED == 2
    assert err.startswith(f"{path}: UNANCHORED: 3 records, chain intact")
    path.write_text("".join(lines_of(path)[:2]))
    code, _, err = run_cli(["audit", "verify", str(path), *key, "--head", str(kept)], capsys)
    assert code == 1
    assert "(record 3 is the first one missing)" in err


@pytest.mark.parametrize("text", ["{}", "", "null", '{"seq": "x", "hash": 1}', "\x00\xff"])
async def test_cli_reports_a_malformed_head_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 2)).close()
    head_path(path).write_text(text)

    code, out, err = run_cli(["audit", "verify", str(path)], capsys)

    assert code == 1
    assert out == ""
    assert err.startswith(f"{path}: TAMPERED: {head_path(path)}")
    assert "Traceback" not in err


async def test_cli_checks_an_anchor_file_saved_from_the_configmap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 4)
    log.close()
    saved = tmp_path / "anchor.json"
    data = {k: str(v) for k, v in log.head.to_json().items()}
    saved.write_text(json.dumps({"kind": "ConfigMap", "data": data}))
    head_path(path).unlink()
    path.write_text("".join(lines_of(path)[:3]))

    code, _, err = run_cli(["audit", "verify", str(path), "--anchor-file", str(saved)], capsys)

    assert code == 1
    assert "log ends at record 3 but the anchor records 4" in err


async def test_cli_reports_a_vanished_log_against_its_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 2)).close()
    path.unlink()

    code, _, err = run_cli(["audit", "verify", str(path)], capsys)

    assert code == 1
    assert "log ends at record 0 but the head file records 2" in err


# The writer


async def test_short_writes_are_continued_until_every_byte_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.write
    monkeypatch.setattr(
        "greenlight.adapters.auditlog.os.write", lambda fd, data: real(fd, bytes(data[:7]))
    )
    path = tmp_path / "audit.jsonl"

    await write_log(path, 3)

    assert verify_file(path, head=read_head(path)).ok
    assert seqs(path) == [1, 2, 3]


async def test_write_that_fails_midway_is_rolled_back_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 2)
    real = os.write
    calls = 0

    def half_then_enospc(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("greenlight.adapters.auditlog.os.write", half_then_enospc)
    with pytest.raises(AuditWriteError, match="No space left on device"):
        await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")
    monkeypatch.setattr("greenlight.adapters.auditlog.os.write", real)
    await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")

    assert seqs(path) == [1, 2, 3]
    assert verify_file(path, head=read_head(path)).ok


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
async def test_failed_head_write_never_duplicates_a_sequence_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 2)
    real = auditlog.write_head
    failures = iter([OSError(code, os.strerror(code))])

    def fail_once(log_path: Path, head: audit.Head) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        real(log_path, head)

    monkeypatch.setattr(auditlog, "write_head", fail_once)
    with pytest.raises(AuditWriteError, match="nothing was recorded"):
        await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")
    assert seqs(path) == [1, 2]
    assert verify_file(path, head=read_head(path)).ok
    await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")

    assert seqs(path) == [1, 2, 3]
    assert verify_file(path, head=read_head(path), require_anchor=True).ok


async def test_log_that_cannot_be_rolled_back_refuses_later_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 1)

    def fail(*_: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(auditlog, "write_head", fail)
    monkeypatch.setattr("greenlight.adapters.auditlog.os.ftruncate", fail)
    with pytest.raises(AuditWriteError):
        await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")
    monkeypatch.undo()

    with pytest.raises(AuditWriteError, match="could not be cut back"):
        await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")
    assert seqs(path) == [1, 2]  # the unreported record stays; nothing chains after it


async def test_torn_last_line_is_moved_aside_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 3)).close()
    torn = '{"seq": 4, "actor": "half a rec'
    with path.open("a") as handle:
        handle.write(torn)

    log = AuditLog(path, key=KEY)
    log.check_against(None)
    await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")

    records = [json.loads(line) for line in lines_of(path)]
    assert [(r["seq"], r["event"]) for r in records[3:]] == [
        (4, "chain_repaired"),
        (5, "decided"),
    ]
    moved = tmp_path / records[3]["details"]["moved_to"]
    assert moved.read_text() == torn
    assert records[3]["details"]["cut_bytes"] == len(torn)
    assert verify_file(path, head=read_head(path)).ok


async def crashed_before_the_head_moved(path: Path, *, key: bytes | None = KEY) -> bytes:
    """Three records, then a group of two whose head replacement a crash prevented."""
    log = await write_log(path, 3, key=key)
    old_head = head_path(path).read_bytes()
    await log.record_all(
        [
            Entry("decision_attempted", REQUEST, "alice", "allowed"),
            Entry("decided", REQUEST, "alice", "Approved"),
        ]
    )
    log.close()
    head_path(path).write_bytes(old_head)
    return old_head


async def test_records_a_crash_left_past_the_head_are_adopted_at_start(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await crashed_before_the_head_moved(path)
    assert not verify_file(path, head=read_head(path)).ok  # "appended outside the operator"

    log = AuditLog(path, key=KEY)
    task = await auditanchor.guard(log, None, Settings(audit_file=path))  # type: ignore[arg-type]

    assert task is None
    assert metrics.AUDIT_CHAIN_BROKEN._value.get() == 0
    assert read_head(path) == log.head
    assert log.head.seq == 5
    assert verify_file(path, head=read_head(path), require_anchor=True).ok
    await log.record("decided", request=REQUEST, actor="bob", outcome="Approved")
    assert seqs(path) == [1, 2, 3, 4, 5, 6]
    assert verify_file(path, head=read_head(path)).ok


async def test_adoption_stops_at_a_torn_line_which_the_next_write_repairs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    await crashed_before_the_head_moved(path)
    with path.open("a") as handle:
        handle.write('{"seq": 6, "actor": "half a rec')

    log = AuditLog(path, key=KEY)
    log.check_against(None)
    assert log.adopt_tail() == 2
    assert log.head.seq == 5
    assert read_head(path) == log.head
    await log.record("decided", request=REQUEST, actor="bob", outcome="Approved")

    events = [json.loads(line)["event"] for line in lines_of(path)]
    assert events[5:] == ["chain_repaired", "decided"]
    assert verify_file(path, head=read_head(path)).ok


@pytest.mark.parametrize(
    ("plant", "why"),
    [
        (tampering.append_forged, "MAC does not match the audit key"),
        (lambda lines: ([*lines, "not json\n"], 0), "not valid JSON"),
    ],
)
async def test_a_record_planted_past_the_head_is_refused_not_adopted(
    tmp_path: Path, plant: Any, why: str
) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 3)).close()
    head = head_path(path).read_bytes()
    planted, _ = plant(lines_of(path))
    path.write_text("".join(planted))

    log = AuditLog(path, key=KEY)
    await auditanchor.guard(log, None, Settings(audit_file=path))  # type: ignore[arg-type]

    assert metrics.AUDIT_CHAIN_BROKEN._value.get() == 1
    with pytest.raises(AuditWriteError, match=rf"line 4 of .*: {why}"):
        await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")
    assert head_path(path).read_bytes() == head
    metrics.AUDIT_CHAIN_BROKEN.set(0)


async def anchored_then_head_deleted(path: Path) -> audit.Head:
    """Three records and the anchor at them, two more records, then the head file deleted."""
    log = await write_log(path, 3)
    anchored = log.head
    await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")
    await log.record("receipt_issued", request=REQUEST, actor="greenlight", outcome="Approved")
    log.close()
    head_path(path).unlink()
    return anchored


async def test_without_its_head_file_the_records_past_the_anchor_are_checked_and_adopted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    anchored = await anchored_then_head_deleted(path)

    log = AuditLog(path, key=KEY)
    log.check_against(anchored, anchor_expected=True)
    assert log.adopt_tail() == 2
    assert read_head(path) == log.head
    assert log.head.seq == 5
    await log.record("decided", request=REQUEST, actor="bob", outcome="Approved")
    assert seqs(path) == [1, 2, 3, 4, 5, 6]
    assert verify_file(path, head=read_head(path), anchor=anchored).ok


@pytest.mark.parametrize(
    ("plant", "why"),
    [
        (tampering.append_forged, "MAC does not match the audit key"),
        (tampering.rewrite_tail, "MAC does not match the audit key"),
        (lambda lines: ([*lines, "not json\n"], 0), "not valid JSON"),
    ],
)
async def test_without_its_head_file_a_record_planted_past_the_anchor_is_refused(
    tmp_path: Path, plant: Any, why: str
) -> None:
    path = tmp_path / "audit.jsonl"
    anchored = await anchored_then_head_deleted(path)
    planted, _ = plant(lines_of(path))
    path.write_text("".join(planted))

    log = AuditLog(path, key=KEY)
    with pytest.raises(AuditChainBroken, match=rf"line \d of .*: {why}"):
        log.check_against(anchored, anchor_expected=True)
    assert not head_path(path).exists()


async def test_without_its_head_file_and_a_key_nothing_past_the_anchor_is_adopted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 3, key=None)
    anchored = log.head
    await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")
    log.close()
    head_path(path).unlink()

    log = AuditLog(path, key=None)
    log.check_against(anchored, anchor_expected=True)
    assert log.adopt_tail() == 0
    assert not head_path(path).exists()


async def test_a_head_that_cannot_be_moved_leaves_the_adoption_to_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    old_head = await crashed_before_the_head_moved(path)
    log = AuditLog(path, key=KEY)
    log.check_against(None)

    def read_only(*_: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(auditlog, "write_head", read_only)
    assert log.adopt_tail() == 0
    assert head_path(path).read_bytes() == old_head
    monkeypatch.undo()
    await log.record("decided", request=REQUEST, actor="bob", outcome="Approved")
    assert seqs(path) == [1, 2, 3, 4, 5, 6]
    assert verify_file(path, head=read_head(path)).ok


async def test_without_a_key_records_past_the_head_are_not_adopted(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    old_head = await crashed_before_the_head_moved(path, key=None)

    log = AuditLog(path, key=None)
    log.check_against(None)

    assert log.adopt_tail() == 0
    assert head_path(path).read_bytes() == old_head


async def test_torn_tail_that_cannot_be_moved_aside_fails_the_write_not_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 1)).close()
    with path.open("a") as handle:
        handle.write('{"seq": 2')
    log = AuditLog(path, key=KEY)

    def fail(*_: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(auditlog, "_save_aside", fail)
    with pytest.raises(AuditWriteError, match=r"cannot repair the torn tail .* Read-only"):
        await asyncio.wait_for(
            log.record("decided", request=REQUEST, actor="alice", outcome="Approved"), 5
        )
    monkeypatch.undo()
    await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")

    assert [json.loads(line)["event"] for line in lines_of(path)[1:]] == [
        "chain_repaired",
        "decided",
    ]


async def test_log_opened_again_in_the_same_process_takes_over_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = await write_log(path, 1)

    second = AuditLog(path, key=KEY)
    await second.record("decided", request=REQUEST, actor="alice", outcome="Approved")

    with pytest.raises(AuditWriteError, match="was opened again in this process"):
        await first.record("decided", request=REQUEST, actor="bob", outcome="Approved")
    assert seqs(path) == [1, 2]


def test_second_writer_process_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = asyncio.run(write_log(path, 1))
    program = (
        "import sys\nfrom pathlib import Path\n"
        "from greenlight.adapters.auditlog import AuditLog, AuditLogLocked\n"
        "try:\n    AuditLog(Path(sys.argv[1]))\nexcept AuditLogLocked as exc:\n"
        "    print(exc)\n    sys.exit(3)\n"
    )

    held = subprocess.run(
        [sys.executable, "-c", program, str(path)], capture_output=True, text=True, timeout=60
    )
    log.close()
    free = subprocess.run(
        [sys.executable, "-c", program, str(path)], capture_output=True, text=True, timeout=60
    )

    assert held.returncode == 3, held.stderr
    assert f"the audit log {path} is already open for writing (pid {os.getpid()} " in held.stdout
    assert free.returncode == 0, free.stdout + free.stderr


# Start-up: no new chain over a cut or vanished log


async def test_check_passes_for_an_intact_log_and_its_anchor(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    anchor = (await write_log(path, 3)).head

    AuditLog(path, key=KEY).check_against(anchor, anchor_expected=True)


async def test_log_cut_at_a_record_boundary_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 3)).close()
    path.write_text("".join(lines_of(path)[:2]))

    with pytest.raises(AuditLogTruncated, match=r"ends at record 2 but .* records 3"):
        AuditLog(path, key=KEY).check_against(None)


def planted_in_the_middle(lines: list[str]) -> list[str]:
    """A line naming a terminal record of a pending request, between records 2 and 3: before,
    the loader believed its event id and the request's decision was never recorded."""
    return [*lines[:2], json.dumps({"event_id": "uid-1:terminal"}) + "\n", *lines[2:]]


def cut_then_capped(lines: list[str]) -> list[str]:
    """Records 3..5 cut, and one line with the head's seq and hash put where they were."""
    last = json.loads(lines[-1])
    return [*lines[:2], json.dumps({"seq": last["seq"], "hash": last["hash"]}) + "\n"]


@pytest.mark.parametrize(
    ("plant", "why"),
    [
        (planted_in_the_middle, r"line 3 of .*: sequence None where 3 was expected"),
        (cut_then_capped, r"line 3 of .*: sequence 5 where 3 was expected"),
        (lambda lines: [*lines[:1], '{"seq": "x"}\n', *lines[1:]], "sequence x where 2"),
        (lambda lines: [*lines[:1], '{"seq": 1e999}\n', *lines[1:]], "sequence inf where 2"),
        (lambda lines: [*lines[:1], '{"seq": [2]}\n', *lines[1:]], r"sequence \[2\] where 2"),
        (lambda lines: [*lines[:1], "\n", *lines[1:]], "line 2 of .*: not valid JSON"),
    ],
)
async def test_a_line_that_is_no_record_of_the_chain_is_not_believed(
    tmp_path: Path, plant: Any, why: str
) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 5)).close()
    path.write_text("".join(plant(lines_of(path))))
    tampered = path.read_bytes()

    log = AuditLog(path, key=KEY)  # never raises on what the file holds

    assert not log.has("uid-1:terminal")
    with pytest.raises(AuditChainBroken, match=why):
        log.check_against(None)
    with pytest.raises(AuditWriteError, match="will not write after a line it did not write"):
        await log.record("decided", request=REQUEST, actor="bob", outcome="Approved")
    with pytest.raises(ValueError, match="a reset continues a chain that lost records"):
        log.reset(actor="admin", reason="INC-2", anchor=None)
    assert path.read_bytes() == tampered  # the evidence is left as it was


async def test_a_line_longer_than_any_record_is_read_no_further(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 2)).close()
    monkeypatch.setattr(audit, "MAX_RECORD_BYTES", 2048)
    with path.open("a") as handle:
        handle.write("x" * 10_000)  # no newline: a torn line would be repaired, this is not

    log = AuditLog(path, key=KEY)

    with pytest.raises(AuditChainBroken, match=r"line 3 of .*: longer than 2048 bytes"):
        log.check_against(None)
    with path.open(encoding="utf-8", newline="") as handle:
        result = audit.verify(audit.read_lines(handle), key=KEY)
    assert (result.ok, result.message) == (False, "line 3: longer than 2048 bytes (no record is)")


async def test_vanished_log_and_head_are_refused_by_the_anchor(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    anchor = (await write_log(path, 3)).head
    path.unlink()
    head_path(path).unlink()

    with pytest.raises(AuditLogTruncated, match=r"records 1\.\.3 are missing"):
        AuditLog(path, key=KEY).check_against(anchor, anchor_expected=True)


async def test_log_with_neither_head_nor_anchor_is_refused_when_an_anchor_is_expected(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 3)).close()
    head_path(path).unlink()

    with pytest.raises(AuditChainBroken, match="neither its head file nor its anchor exists"):
        AuditLog(path, key=KEY).check_against(None, anchor_expected=True)
    AuditLog(path, key=KEY).check_against(None)  # no anchor configured: nothing to compare


async def test_forged_or_malformed_head_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 3)
    log.close()
    head_path(path).write_text(json.dumps({**log.head.to_json(), "mac": "0" * 64}))
    with pytest.raises(AuditChainBroken, match="MAC does not match the audit key"):
        AuditLog(path, key=KEY).check_against(None)

    head_path(path).write_text("{}")
    with pytest.raises(AuditChainBroken, match="seq must be a whole number"):
        AuditLog(path, key=KEY).check_against(None)


async def test_head_without_a_mac_over_a_cut_is_refused_when_the_anchor_is_gone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 5)).close()
    # Cut after record 3, a head without a MAC naming record 3, the anchor ConfigMap deleted.
    kept = lines_of(path)[:3]
    path.write_text("".join(kept), encoding="utf-8")
    last = json.loads(kept[-1])
    head_path(path).write_text(json.dumps({"seq": 3, "hash": last["hash"]}))

    with pytest.raises(AuditChainBroken, match="MAC does not match the audit key"):
        AuditLog(path, key=KEY).check_against(None, anchor_expected=True)


async def test_head_from_before_heads_were_maced_is_accepted_at_the_log_end(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    log = await write_log(path, 3)
    log.close()
    head_path(path).write_text(json.dumps({"seq": 3, "hash": log.head.hash}))

    reopened = AuditLog(path, key=KEY)
    reopened.check_against(None)
    await reopened.record("decided", request=REQUEST, actor="alice", outcome="Approved")

    assert verify_file(path, head=read_head(path)).ok


async def test_reset_records_what_was_lost_and_the_chain_verifies_again(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    old = await write_log(path, 4)
    anchor = old.head
    old.close()
    path.write_text("".join(lines_of(path)[:2]))
    log = AuditLog(path, key=KEY)
    with pytest.raises(AuditLogTruncated):
        log.check_against(anchor)

    record = log.reset(actor="admin@example.com", reason="INC-1: restored", anchor=anchor)
    log.close()

    assert (record["seq"], record["event"], record["actor"]) == (
        3,
        "chain_reset",
        "admin@example.com",
    )
    assert record["details"]["anchor"] == {"seq": 4, "hash": anchor.hash}
    assert record["details"]["log"]["seq"] == 2
    reopened = AuditLog(path, key=KEY)
    reopened.check_against(reopened.head, anchor_expected=True)
    result = verify_file(path, head=read_head(path), anchor=reopened.head)
    assert result.ok, result.message
    assert result.message == "3 records, chain intact (reset by an admin at record 3)"


async def test_cli_reset_with_an_anchor_file_re_anchors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    (tmp_path / "audit.key").write_bytes(KEY)
    log = await write_log(path, 3)
    log.close()
    saved = tmp_path / "anchor.json"
    saved.write_text(json.dumps(log.head.to_json()))
    path.write_text("")
    args = ["--key-file", str(tmp_path / "audit.key"), "--anchor-file", str(saved)]
    assert run_cli(["audit", "verify", str(path), *args], capsys)[0] == 1

    code, out, _ = run_cli(["audit", "reset", str(path), "--reason", "emptied", *args], capsys)

    assert code == 0
    assert "chain reset by" in out
    assert json.loads(saved.read_text())["seq"] == 1
    assert run_cli(["audit", "verify", str(path), *args], capsys)[0] == 0


async def test_broken_chain_at_start_sets_the_metric_and_refuses_every_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 3)).close()
    path.write_text("".join(lines_of(path)[:1]))
    log = AuditLog(path, key=KEY)

    task = await auditanchor.guard(log, None, Settings(audit_file=path))  # type: ignore[arg-type]

    assert task is None
    assert metrics.AUDIT_CHAIN_BROKEN._value.get() == 1
    with pytest.raises(AuditWriteError, match=r"the audit chain is broken: .* ends at record 1"):
        await log.record("decided", request=REQUEST, actor="alice", outcome="Approved")
    assert len(lines_of(path)) == 1
    metrics.AUDIT_CHAIN_BROKEN.set(0)


# The anchor publisher


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("audit.jsonl", "greenlight-audit-anchor"),
        ("audit-greenlight-0.jsonl", "greenlight-audit-anchor-greenlight-0"),
        ("Ops_Log.jsonl", "greenlight-audit-anchor-ops-log"),
    ],
)
def test_anchor_name_is_derived_from_the_log_file(file: str, name: str) -> None:
    assert auditanchor.anchor_name(Path("/var/lib") / file) == name


class FakeAnchor:
    def __init__(self, failures: int = 0) -> None:
        self.writes: list[audit.Head] = []
        self.failures = failures

    async def write(self, head: audit.Head, log_file: str) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("API server unreachable")
        self.writes.append(head)


async def test_publisher_batches_and_ends_current(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", key=KEY)
    store = FakeAnchor(failures=1)
    publisher = auditanchor.AnchorPublisher(
        store,  # type: ignore[arg-type]
        "audit.jsonl",
        interval=0.05,
        retry=0.01,
    )
    log.watch(publisher.note)
    task = asyncio.create_task(publisher.run())
    await asyncio.gather(
        *(
            log.record("decision_attempted", request=None, actor=f"u{n}", outcome="refused")
            for n in range(200)
        )
    )
    for _ in range(100):
        if publisher.published == log.head:
            break
        await asyncio.sleep(0.02)
    task.cancel()

    assert publisher.published == log.head
    assert store.writes[-1].seq == 200
    assert len(store.writes) < 20
    assert [h.seq for h in store.writes] == sorted(h.seq for h in store.writes)


async def test_a_symlink_planted_on_the_volume_is_never_written_through(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 2)).close()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    tmp = head_path(path).with_name(head_path(path).name + ".tmp")
    tmp.symlink_to(victim)  # the head is written through <log>.head.tmp

    log = AuditLog(path, key=KEY)
    await log.record("decided", request=REQUEST, actor="bob", outcome="Approved")
    log.close()

    assert victim.read_text() == "precious\n"
    assert read_head(path) == AuditLog(path, key=KEY).head
    other = tmp_path / "other.jsonl"  # a log this process never opened
    lock_path(other).symlink_to(victim)  # the lock file is truncated when it is taken
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        AuditLog(other, key=KEY)
    assert victim.read_text() == "precious\n"


def test_a_log_that_is_no_regular_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    os.mkfifo(path)  # reading it would wait forever; /dev/zero would never end
    with pytest.raises(OSError, match="is not a regular file"):
        AuditLog(path, key=KEY)


@pytest.mark.parametrize("plant", ["fifo", "symlink", "huge"])
async def test_a_head_file_that_is_no_head_refuses_the_log_and_never_hangs(
    tmp_path: Path, plant: str
) -> None:
    path = tmp_path / "audit.jsonl"
    (await write_log(path, 2)).close()
    head = head_path(path)
    head.unlink()
    if plant == "fifo":
        os.mkfifo(head)  # reading it would wait for a writer forever
    elif plant == "symlink":
        head.symlink_to("/dev/zero")
    else:
        head.write_text(" " * 10_000)

    log = AuditLog(path, key=KEY)

    with pytest.raises(AuditChainBroken, match="head"):
        log.check_against(None)
