"""The audit log's sinks: an append-only file (on a persistent volume) and the JSON log on
stdout (so Loki keeps a copy).

Writes are serialized, deduplicated by `event_id` (a retried handler writes an event once), and
flushed to disk with fsync before `record` returns, because the operator reports a decision only
after its audit record is durable. The file is opened for each append, so a rotated or replaced
file is picked up, and an unwritable one fails that write (and only that write). One process
writes a log: it holds an exclusive lock on `<log>.lock` for as long as the log is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import structlog
from opentelemetry import trace

from greenlight.core import audit as chain
from greenlight.core.timefmt import format_precise, now
from greenlight.telemetry import metrics, spans

_log = structlog.get_logger("greenlight.audit")
_tracer = trace.get_tracer("greenlight.operator")


def head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def open_regular(path: Path, flags: int, mode: int = 0o640) -> int:
    """Open a file of the audit volume: never through a symlink planted in its place, and only a
    regular file (not a FIFO, a device like /dev/zero, a directory): OSError otherwise."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def _read_regular(path: Path) -> BinaryIO:
    return os.fdopen(open_regular(path, os.O_RDONLY), "rb")


def load_or_create_key(path: Path) -> bytes:
    """The audit MAC key; created (0600) on first use when the file does not exist."""
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def request_summary(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The full request as the audit record keeps it (plan details included)."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "spec": obj.get("spec") or {},
        "phase": status.get("phase"),
        "requestedBy": status.get("requestedBy"),
        "planDigest": status.get("planDigest"),
        "expiresAt": status.get("expiresAt"),
    }


@dataclass(frozen=True)
class Entry:
    """One record to append (`AuditLog.record_all`); `AuditLog.record` takes the same fields."""

    event: str
    request: Mapping[str, Any] | None
    actor: str
    outcome: str
    reason: str = ""
    details: Mapping[str, Any] | None = None
    event_id: str | None = None


class AuditWriteError(Exception):
    """The record could not be made durable; whatever it describes must not be reported."""


class AuditLogLocked(Exception):
    """Another process writes this log (it holds `<log>.lock`); two writers would fork the chain."""


class AuditChainBroken(Exception):
    """The log does not hold what its head file or anchor says it held: records are gone."""


class AuditLogTruncated(AuditChainBroken):
    """The log ends before the sequence number its head file or anchor records."""


Listener = Callable[[chain.Head], None]
_owners: dict[str, AuditLog] = {}


class AuditLog:
    """The operator's audit log. `record` returns once its record is on disk (fsync).

    Records are written in groups: whatever was recorded while the previous write was being
    made durable goes out in one write and one fsync (group commit). Each caller still waits
    for the fsync that covers its own record, so nothing is reported before it is durable,
    while a burst (a thousand expiries in one second) costs a few fsyncs instead of a thousand.
    `record_all` queues several records at once, so they share a group: a decision's records
    (the attempt, the decision, the receipt) cost one fsync, not three.

    A group is durable only when every byte of it was written, fsynced, and the head file
    replaced. When any of that fails, the file is cut back to where the group began and the
    group fails as a whole, so the log, its head and the in-memory `seq`/`prev` stay exactly
    as before and the next group takes the same sequence numbers: the chain verifies at every
    moment, and nothing a caller was told failed is left in the log. Only when that cut itself
    fails does the log hold bytes nobody was told about; it then refuses every later write
    (until a restart repairs the tail), rather than chain after them.

    A torn last line found when the log is opened (a crash in the middle of a write, which was
    therefore never reported durable) is moved aside to `<log>.torn-<offset>` before the next
    write, and a `chain_repaired` record says what was cut, so the chain continues intact.
    """

    def __init__(self, path: Path, *, key: bytes | None = None) -> None:
        self.path = path
        self.key = key
        self._seen: set[str] = set()
        self._seq = 0
        self._prev = chain.GENESIS
        self._queue: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = []
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []
        self._refusal: str | None = None
        self._torn: int | None = None  # where a torn last line starts
        # Byte offsets: where the record the head file names ends, and where the whole lines end.
        self._after_head: int | None = None
        self._whole_end = 0
        self._anchored: chain.Head | None = None
        self._file_head: chain.Head | None = None
        self._file_head_error: str | None = None
        self._load_error: str | None = None  # the first line of the log that is no record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock: int | None = self._take_lock()
        self._load()

    def _take_lock(self) -> int:
        """The writer's lock on `<log>.lock`. Within one process the newest AuditLog of a file
        takes it over from the older one, which then refuses writes (kopf retries a failed
        start-up handler, which opens the log again); another process gets AuditLogLocked."""
        owned = str(self.path.resolve())
        older = _owners.get(owned)
        _owners[owned] = self
        if older is not None and older._lock is not None:
            fd, older._lock = older._lock, None
            older._refusal = f"the audit log {self.path} was opened again in this process"
            return fd
        try:
            return _lock(self.path)
        except BaseException:
            del _owners[owned]
            raise

    def _load(self) -> None:
        """Read the log as it is: every whole record is checked as `greenlight audit verify`
        checks it (sequence, chain, hash, and MAC with a key), and only what checks out is
        believed. At the first line that does not, the log is taken as broken
        (`check_against` raises, and every write is refused): nothing past it is read, and
        nothing is written after it."""
        try:
            self._file_head = read_head(self.path)
        except chain.HeadError as exc:
            self._file_head_error = str(exc)
        if not self.path.exists():
            return
        head_seq = self._file_head.seq if self._file_head is not None else None
        offset = 0
        if head_seq == 0:
            self._after_head = 0
        with _read_regular(self.path) as handle:  # line by line: the log may be far larger than RAM
            number = 0
            while raw := handle.readline(chain.MAX_RECORD_BYTES + 1):
                number += 1
                if not raw.endswith(b"\n") and len(raw) <= chain.MAX_RECORD_BYTES:
                    self._torn = offset
                    break
                problem = self._note_loaded(raw)
                if problem is not None:
                    self._broken(f"line {number} of {self.path}: {problem}")
                    break
                offset += len(raw)
                if self._after_head is None and self._seq == head_seq:
                    self._after_head = offset
        self._whole_end = offset

    def _note_loaded(self, raw: bytes) -> str | None:
        """Believe one line of the log, or say why it is not the chain's next record."""
        try:
            record, self._prev = chain.read_record(
                raw, seq=self._seq + 1, prev=self._prev, key=self.key
            )
        except chain.RecordError as exc:
            return str(exc)
        self._seq += 1
        if record.get("event_id"):
            self._seen.add(str(record["event_id"]))
        return None

    def _broken(self, problem: str) -> None:
        self._load_error = problem
        self._refusal = (
            f"the audit chain is broken: {problem}; the operator will not write after a line "
            "it did not write (keep a copy of the log as evidence, then remove the line or "
            "move the log aside; `greenlight audit verify` names it)"
        )

    @property
    def head(self) -> chain.Head:
        """Where the durable chain ends now (MACed when the log has a key)."""
        return chain.make_head(self._seq, self._prev, self.key)

    def watch(self, listener: Listener) -> None:
        """Call `listener(head)` after every durable group, in the event loop (must not block)."""
        self._listeners.append(listener)

    def check_against(self, anchor: chain.Head | None, *, anchor_expected: bool = False) -> None:
        """Raise AuditChainBroken (AuditLogTruncated when records are missing) unless the log
        holds everything its head file and `anchor` record, so no new chain starts over a cut
        or vanished log. A head file written before heads carried a MAC is accepted only where
        it matches the log's end exactly and no configured anchor is missing (a head without a
        MAC is what anyone can write over a cut, and the anchor is then the only witness); it
        gets its MAC at the next write. With
        `anchor_expected` (an anchor is configured but none exists) a log with records must
        still have its head file: both gone at once is how a cut would be hidden."""
        if self._load_error is not None:
            raise AuditChainBroken(self._load_error)
        if self._file_head_error is not None:
            raise AuditChainBroken(f"{head_path(self.path)}: {self._file_head_error}")
        if anchor_expected and anchor is None and self._file_head is None and self._seq > 0:
            raise AuditChainBroken(
                f"{self.path} holds {self._seq} records but neither its head file nor its "
                "anchor exists (both were deleted); the operator will not continue it until "
                "an admin runs `greenlight audit reset`"
            )
        for name, where, reference in (
            ("head file", head_path(self.path), self._file_head),
            ("anchor", "the anchor", anchor),
        ):
            if reference is None:
                continue
            legacy = (
                name == "head file"
                and reference.mac is None
                and not (anchor_expected and anchor is None)
            )
            matches_end = (reference.seq, reference.hash) == (self._seq, self._prev)
            if (
                self.key is not None
                and not chain.head_is_authentic(reference, self.key)
                and not (legacy and matches_end)
            ):
                raise AuditChainBroken(
                    f"{where}: the {name}'s MAC does not match the audit key; "
                    "it was not written by this operator"
                )
            if reference.seq > self._seq:
                raise AuditLogTruncated(
                    f"{self.path} ends at record {self._seq} but {where} records "
                    f"{reference.seq}: records {self._seq + 1}..{reference.seq} are missing "
                    "(the log was truncated or replaced); the operator will not start a new "
                    "chain over it until an admin runs `greenlight audit reset`"
                )
            if self._hash_at(reference.seq) != reference.hash:
                raise AuditChainBroken(
                    f"record {reference.seq} of {self.path} does not match {where} "
                    "(the log was replaced); the operator will not continue it until an "
                    "admin runs `greenlight audit reset`"
                )
        self._anchored = anchor

    def adopt_tail(self) -> int:
        """Move the head file to the log's end when whole records follow it; return how many.

        A crash between a group's fsync and its head's replacement leaves such records: the
        operator wrote them but never reported them durable, and a restarted operator writes
        them at most once more (event ids), so they stay. They are adopted only when they
        continue the head's chain and carry the key's MAC; anything else past the head (a line
        that is no record, a forged record) raises AuditChainBroken. When the head file is gone
        but `check_against` was given an anchor, the records past the anchor are checked the
        same way and the head file is written again. Without a key nothing can be told apart, so
        nothing is adopted: the head moves at the next write. Call after `check_against`, at
        start (the offsets it reads are the log's as it was opened)."""
        head, start, named = self._file_head, self._after_head, "its head file"
        if head is None and self._anchored is not None and self.key is not None:
            found = self._record_end(self._anchored.seq)
            start = found[0] if found is not None else None
            head, named = self._anchored, "the anchor"
        if self.key is None or head is None or start is None or start == self._whole_end:
            return 0
        with contextlib.closing(self._lines_between(start, self._whole_end)) as lines:
            result = chain.verify(lines, key=self.key, after=head)
        end = (result.last.seq, result.last.hash) if result.last is not None else None
        if not result.ok or end != (self._seq, self._prev):
            why = result.message if not result.ok else "it does not end where the log does"
            raise AuditChainBroken(
                f"{self.path}: what follows record {head.seq} ({named}) is not this "
                f"operator's: {why}; the operator will not continue it until an admin runs "
                "`greenlight audit reset`"
            )
        adopted = self._seq - head.seq
        try:
            write_head(self.path, self.head)
        except OSError as exc:  # the next write moves it, or fails as every write then does
            _log.warning(
                "audit records past the head file checked but the head could not be moved",
                head_seq=head.seq,
                log_seq=self._seq,
                error=str(exc),
            )
            return 0
        self._file_head, self._after_head = self.head, self._whole_end
        _log.warning(
            "audit records past the head file adopted (the operator stopped before moving it)"
            if named == "its head file"
            else "audit head file missing: the records past the anchor were checked and adopted",
            head_seq=head.seq,
            log_seq=self._seq,
            adopted=adopted,
        )
        return adopted

    def _record_end(self, seq: int) -> tuple[int, str] | None:
        """Where the whole record `seq` ends (a byte offset) and its hash, from a scan of the
        log; None when no whole record has that number. The genesis (0) ends at 0."""
        if seq == 0:
            return 0, chain.GENESIS
        offset = 0
        with _read_regular(self.path) as handle:
            for raw in handle:
                if offset >= self._whole_end:
                    break
                offset += len(raw)
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("seq") == seq:
                    return offset, str(record.get("hash"))
        return None

    def _lines_between(self, start: int, end: int) -> Generator[str]:
        """The log's lines from byte `start` to byte `end` (both at line boundaries)."""
        with _read_regular(self.path) as handle:
            handle.seek(start)
            while handle.tell() < end:
                yield handle.readline().decode("utf-8", errors="replace")

    def _hash_at(self, seq: int) -> str | None:
        if seq == self._seq:
            return self._prev
        found = self._record_end(seq)
        return found[1] if found is not None else None

    def refuse(self, reason: str) -> None:
        """Fail every later write with `reason`, and let go of the log (so an admin can reset
        it while this process still runs)."""
        self._refusal = reason
        self.close()

    def close(self) -> None:
        """Release the writer's lock; the log takes no more writes."""
        if self._refusal is None:
            self._refusal = f"the audit log {self.path} is closed"
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def has(self, event_id: str) -> bool:
        """Whether a record with this `event_id` is durably written."""
        return event_id in self._seen

    async def record(
        self,
        event: str,
        *,
        request: Mapping[str, Any] | None,
        actor: str,
        outcome: str,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
        event_id: str | None = None,
    ) -> bool:
        """Append one record; False when `event_id` was already written. Raises AuditWriteError."""
        entry = Entry(event, request, actor, outcome, reason, details, event_id)
        (written,) = await self.record_all([entry])
        return written

    async def record_all(self, entries: Sequence[Entry]) -> list[bool]:
        """Append `entries` in this order and return once every one is durable: they are
        queued together, so they go out in one group (one write, one fsync) rather than one
        group each. For each, False when its `event_id` was already written. Raises
        AuditWriteError when any of them could not be written (a group fails as a whole)."""
        for entry in entries:
            if entry.event not in chain.EVENTS:
                raise ValueError(f"unknown audit event {entry.event!r}")
        if self._refusal is not None:
            raise AuditWriteError(self._refusal)
        results: list[bool] = []
        waits: list[asyncio.Future[dict[str, Any]]] = []
        ours: list[asyncio.Future[dict[str, Any]]] = []
        for entry in entries:
            key = entry.event_id
            earlier = self._inflight.get(key) if key is not None else None
            if key is not None and key in self._seen:
                results.append(False)
            elif earlier is not None:  # being written: wait for it (it raises if that fails)
                results.append(False)
                waits.append(earlier)
            else:
                future = self._enqueue(entry)
                results.append(True)
                waits.append(future)
                ours.append(future)
        if ours and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._write_queued())
        events = ",".join(entry.event for entry in entries)
        with _tracer.start_as_current_span(
            spans.AUDIT_WRITE, attributes={"greenlight.audit.event": events}
        ):
            outcomes = await asyncio.gather(
                *(asyncio.shield(future) for future in waits), return_exceptions=True
            )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        for future in ours:
            record = future.result()
            _log.info(f"audit {record['event']}", audit=record)
        return results

    def _enqueue(self, entry: Entry) -> asyncio.Future[dict[str, Any]]:
        fields = _fields(entry)
        written: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((fields, written))
        if entry.event_id is not None:
            self._inflight[entry.event_id] = written
        return written

    def reset(self, *, actor: str, reason: str, anchor: chain.Head | None) -> dict[str, Any]:
        """Write a `chain_reset` record that continues the chain from what the file holds and
        names what the head file and `anchor` recorded; an admin's explicit act (the CLI's
        `audit reset`), after which the head (and the caller, the anchor) point at it. A log
        with a line that is no record of its chain is not continued (ValueError): a reset
        accepts lost records, not planted or edited ones."""
        if self._load_error is not None:
            raise ValueError(
                f"{self._load_error}: a reset continues a chain that lost records, not one with "
                "a line that is no record (keep a copy of the log as evidence, then remove the "
                "line or move the log aside)"
            )
        self._repair_torn_tail()
        details: dict[str, Any] = {
            "log": {"seq": self._seq, "hash": self._prev},
            "anchor": _head_details(anchor),
            "head_file": _head_details(self._file_head),
        }
        if self._file_head_error is not None:
            details["head_file"] = {"error": self._file_head_error}
        fields = _fields(Entry("chain_reset", None, actor, "reset", reason, details))
        (record,) = self._commit([fields])
        _log.info("audit chain_reset", audit=record)
        return record

    async def _write_queued(self) -> None:
        """Write everything queued, one group (one write, one fsync) at a time, in order."""
        while self._queue:
            group, self._queue = self._queue, []
            if self._refusal is not None:
                records: list[dict[str, Any]] | AuditWriteError = AuditWriteError(self._refusal)
            else:
                started = time.perf_counter()
                try:
                    records = await asyncio.to_thread(self._commit, [f for f, _ in group])
                except AuditWriteError as exc:
                    records = exc
                except Exception as exc:  # every waiting caller must get an answer
                    records = AuditWriteError(f"cannot write audit record to {self.path}: {exc}")
                metrics.AUDIT_WRITE_DURATION.observe(time.perf_counter() - started)
            if isinstance(records, AuditWriteError):
                for fields, written in group:
                    self._settle(fields, written, error=records)
                continue
            for (fields, written), record in zip(group, records, strict=True):
                self._settle(fields, written, record=record)
            head = self.head
            for listener in self._listeners:
                listener(head)

    def _commit(self, group: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Seal `group` after the chain's end and make it durable, or raise AuditWriteError with
        the log, its head and the chain state unchanged (see the class docstring)."""
        try:
            self._repair_torn_tail()
        except OSError as exc:
            raise AuditWriteError(f"cannot repair the torn tail of {self.path}: {exc}") from exc
        seq, prev = self._seq, self._prev
        records = []
        for fields in group:
            seq += 1
            record = chain.seal(fields, seq=seq, prev=prev, key=self.key)
            prev = record["hash"]
            records.append(record)
        # ASCII only: no raw U+2028 or other separators that some readers split lines on.
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8")
        try:
            fd = open_regular(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except OSError as exc:
            raise AuditWriteError(f"cannot write audit record to {self.path}: {exc}") from exc
        try:
            start = os.fstat(fd).st_size
            try:
                _write_all(fd, text)
                os.fsync(fd)
                write_head(self.path, chain.make_head(seq, prev, self.key))
            except OSError as exc:
                self._roll_back(fd, start, exc)
                raise AuditWriteError(
                    f"cannot write audit record to {self.path}: {exc}; nothing was recorded"
                ) from exc
        finally:
            os.close(fd)
        self._seq, self._prev = seq, prev
        return records

    def _roll_back(self, fd: int, size: int, cause: OSError) -> None:
        """Cut the file back to `size` (the group's start); when even that fails, the log holds
        bytes no caller was told about, so it takes no more writes until a restart repairs it."""
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            self._refusal = (
                f"the audit log {self.path} could not be cut back after a failed write "
                f"({cause}; then {exc}); restart the operator to repair its tail"
            )
            _log.error("audit log left with an unreported tail", error=self._refusal)

    def _repair_torn_tail(self) -> None:
        """Move a torn last line aside and record what was cut (see the class docstring)."""
        if self._torn is None:
            return
        offset = self._torn
        moved, size, digest = _save_aside(self.path, offset)
        fd = open_regular(self.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        details = {
            "cut_at_byte": offset,
            "cut_bytes": size,
            "cut_sha256": digest,
            "moved_to": moved.name,
        }
        fields = _fields(
            Entry(
                "chain_repaired",
                None,
                "greenlight",
                "repaired",
                "torn last line (a write was interrupted) cut from the log",
                details,
            )
        )
        self._torn = None
        try:
            (record,) = self._commit([fields])
        except AuditWriteError:
            self._torn = offset  # the cut is already saved aside; recorded at the next write
            raise
        _log.warning("audit chain_repaired", audit=record)

    def _settle(
        self,
        fields: Mapping[str, Any],
        written: asyncio.Future[dict[str, Any]],
        *,
        record: dict[str, Any] | None = None,
        error: AuditWriteError | None = None,
    ) -> None:
        event_id = fields.get("event_id")
        if event_id is not None:
            self._inflight.pop(str(event_id), None)
            if record is not None:
                self._seen.add(str(event_id))
        if written.done():
            return
        if record is not None:
            written.set_result(record)
        else:
            written.set_exception(error or AuditWriteError("audit write failed"))


def _fields(entry: Entry) -> dict[str, Any]:
    """The fields of a record before it is sealed into the chain."""
    return {
        "time": format_precise(now()),
        "event": entry.event,
        "event_id": entry.event_id,
        "actor": entry.actor,
        "outcome": entry.outcome,
        "reason": entry.reason,
        "request": dict(entry.request) if entry.request is not None else None,
        "details": dict(entry.details or {}),
    }


def _head_details(head: chain.Head | None) -> dict[str, Any] | None:
    return {"seq": head.seq, "hash": head.hash} if head is not None else None


def _lock(path: Path) -> int:
    """Hold `<log>.lock` exclusively (released when the process ends), or AuditLogLocked."""
    lock = lock_path(path)
    fd = open_regular(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise AuditLogLocked(
            f"the audit log {path} is already open for writing (pid {holder} holds "
            f"{lock}); two writers would fork the chain: give each operator its own "
            "GREENLIGHT_AUDIT_FILE, or stop the other one"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a full disk, a signal): go on until all is written."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def write_head(path: Path, head: chain.Head) -> None:
    """Replace `<log>.head` atomically (a temporary file, fsynced, renamed over it)."""
    target = head_path(path)
    tmp = target.with_name(target.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a crash's leftover, or a symlink planted to have the head written through
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    try:
        _write_all(fd, (json.dumps(head.to_json()) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def _save_aside(path: Path, offset: int) -> tuple[Path, int, str]:
    """Copy the bytes of `path` from `offset` on to a new `<log>.torn-<offset>[.n]`; return
    that file, how many bytes it holds and their SHA-256."""
    for attempt in range(1000):
        suffix = f".torn-{offset}" + (f".{attempt}" if attempt else "")
        target = path.with_name(path.name + suffix)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:
            continue
        digest, size = hashlib.sha256(), 0
        try:
            with path.open("rb") as source:
                source.seek(offset)
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    _write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        return target, size, digest.hexdigest()
    raise AuditWriteError(f"cannot move the torn tail of {path} aside: too many earlier ones")


def read_head(path: Path) -> chain.Head | None:
    """The head file beside `path`; None when there is none. Raises chain.HeadError."""
    head = head_path(path)
    try:
        with _read_regular(head) as handle:
            raw = handle.read(chain.MAX_HEAD_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symlink, a FIFO or a device in its place
        raise chain.HeadError(f"{head} cannot be read as the head file: {exc}") from None
    if len(raw) > chain.MAX_HEAD_BYTES:
        raise chain.HeadError(f"{head} is longer than {chain.MAX_HEAD_BYTES} bytes: no head is")
    return chain.parse_head_text(raw.decode("utf-8", errors="replace"), source=str(head))
