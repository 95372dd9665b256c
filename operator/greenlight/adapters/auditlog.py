"""The audit log's sinks: an append-only file (on a persistent volume) and the JSON log on
stdout (so Loki keeps a copy).

Writes are serialized, deduplicated by `event_id` (a retried handler writes an event once), and
flushed to disk with fsync before `record` returns, because the operator reports a decision only
after its audit record is durable. The file is opened for each append, so a rotated or replaced
file is picked up, and an unwritable one fails that write (and only that write).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import trace

from greenlight.core import audit as chain
from greenlight.core.timefmt import format_precise, now
from greenlight.telemetry import spans

_current: AuditLog | None = None
_log = structlog.get_logger("greenlight.audit")
_tracer = trace.get_tracer("greenlight.operator")


def current() -> AuditLog:
    """The operator's running audit log."""
    if _current is None:
        raise RuntimeError("the audit log is not open")
    return _current


def install(log: AuditLog) -> None:
    global _current
    _current = log


def head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


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


class AuditWriteError(Exception):
    """The record could not be made durable; whatever it describes must not be reported."""


class AuditLog:
    """The operator's audit log. `record` returns once its record is on disk (fsync).

    Records are written in groups: whatever was recorded while the previous write was being
    made durable goes out in one write and one fsync (group commit). Each caller still waits
    for the fsync that covers its own record, so nothing is reported before it is durable,
    while a burst (a thousand expiries in one second) costs a few fsyncs instead of a thousand.
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
        self._load()

    def _load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                self._seq = int(record.get("seq", self._seq))
                self._prev = str(record.get("hash", self._prev))
                if record.get("event_id"):
                    self._seen.add(str(record["event_id"]))

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
        if event not in chain.EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        if event_id is not None:
            if event_id in self._seen:
                return False
            earlier = self._inflight.get(event_id)
            if earlier is not None:
                await asyncio.shield(earlier)  # raises when that write failed: retry later
                return False
        fields = {
            "time": format_precise(now()),
            "event": event,
            "event_id": event_id,
            "actor": actor,
            "outcome": outcome,
            "reason": reason,
            "request": dict(request) if request is not None else None,
            "details": dict(details or {}),
        }
        written: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((fields, written))
        if event_id is not None:
            self._inflight[event_id] = written
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        with _tracer.start_as_current_span(
            spans.AUDIT_WRITE, attributes={"greenlight.audit.event": event}
        ):
            record = await asyncio.shield(written)
        _log.info(f"audit {event}", audit=record)
        return True

    async def _write_queued(self) -> None:
        """Write everything queued, one group (one write, one fsync) at a time, in order."""
        while self._queue:
            group, self._queue = self._queue, []
            seq, prev = self._seq, self._prev
            records = []
            for fields, _ in group:
                seq += 1
                record = chain.seal(fields, seq=seq, prev=prev, key=self.key)
                prev = record["hash"]
                records.append(record)
            text = "".join(
                # ASCII only: no raw U+2028 or other separators that some readers split lines on.
                json.dumps(r, sort_keys=True) + "\n"
                for r in records
            )
            try:
                await asyncio.to_thread(self._append, text, records[-1])
            except OSError as exc:
                error = AuditWriteError(f"cannot write audit record to {self.path}: {exc}")
                for fields, written in group:
                    self._settle(fields, written, error=error)
                continue
            self._seq, self._prev = seq, prev
            for (fields, written), record in zip(group, records, strict=True):
                self._settle(fields, written, record=record)

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

    def _append(self, text: str, last: Mapping[str, Any]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        head = head_path(self.path)
        tmp = head.with_name(head.name + ".tmp")
        tmp.write_text(json.dumps({"seq": last["seq"], "hash": last["hash"]}) + "\n")
        os.replace(tmp, head)


def read_head(path: Path) -> chain.Head | None:
    head = head_path(path)
    if not head.exists():
        return None
    data = json.loads(head.read_text())
    return chain.Head(seq=int(data["seq"]), hash=str(data["hash"]))
