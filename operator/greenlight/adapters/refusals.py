"""Refused attempts on record, bounded in size and in rate, whoever sends them.

Every refused attempt is audited, but a flood of them (a loop of `kubectl annotate` without
rights, forged admission reviews, unsigned chat payloads) must not fill the audit volume. So a
refusal record is small (the request's identity and digest, never its plan; capped text fields),
and per (caller, reason, request) only the first refusal in each window is written at once; the
ones that follow in that window are counted and written as one record with the count when the
window closes. The table of open windows is bounded too: past `max_keys`, refusals are counted
under one shared key. Resource use never depends on what an unauthenticated caller sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from greenlight.adapters.auditlog import AuditLog, AuditWriteError
from greenlight.telemetry import metrics

_log = structlog.get_logger("greenlight.refusals")
WINDOW = 60.0
MAX_KEYS = 64  # open windows: the records a flood of made-up callers writes per window
MAX_TEXT = 512
MAX_PART = 768  # bytes of JSON a refusal record keeps of the request, and of the details
OVERFLOW = ("*", "*", "")


def bounded(value: Any, limit: int = MAX_TEXT) -> Any:
    """Strings cut to `limit` characters, in nested lists and mappings too (one level deep)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, Mapping):
        return {str(k)[:64]: bounded(v, limit) for k, v in list(value.items())[:16]}
    if isinstance(value, list | tuple):
        return [bounded(v, limit) for v in list(value)[:16]]
    return value


def fitted(value: Any) -> Any:
    """`bounded(value)`; when its JSON is still over MAX_PART bytes (many long strings, or
    characters JSON escapes six bytes each), the start of that JSON and the digest of it."""
    value = bounded(value)
    text = json.dumps(value, sort_keys=True)
    if len(text) <= MAX_PART:
        return value
    return {"cut": text[: MAX_PART // 2], "sha256": hashlib.sha256(text.encode()).hexdigest()}


@dataclass
class _Window:
    until: float
    suppressed: int = 0
    last: dict[str, Any] = field(default_factory=dict)


class RefusalLog:
    def __init__(
        self, audit: AuditLog, *, window: float = WINDOW, max_keys: int = MAX_KEYS
    ) -> None:
        self._audit = audit
        self._window = window
        self._max = max_keys
        self._open: dict[tuple[str, str, str], _Window] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def refuse(
        self,
        actor: str,
        reason: str,
        *,
        request: Mapping[str, Any] | None,
        details: Mapping[str, Any],
        event: str = "decision_attempted",
        count: bool = True,
    ) -> None:
        """Count one refusal (`reason` is a bounded code; `count=False` when the caller counted
        it already); write it now when it opens a window."""
        if count and reason in metrics.REFUSAL_REASONS:
            metrics.refuse(reason)
        key = (bounded(actor, 256), reason, bounded(str((request or {}).get("uid") or ""), 64))
        if key not in self._open and len(self._open) >= self._max:
            key = OVERFLOW
        record = {
            "event": event,
            "request": fitted(request) if request else None,
            "actor": key[0],
            "reason": reason,
            "details": fitted(details),
        }
        window = self._open.get(key)
        now = time.monotonic()
        if window is not None and now < window.until:
            window.suppressed += 1
            window.last = record
            self._ensure_flusher()
            return
        self._open[key] = _Window(until=now + self._window)
        if window is not None and window.suppressed:  # closed, and not flushed yet
            await self._write(window.last, count=window.suppressed, aggregated=True)
        await self._write(record, count=1)
        self._ensure_flusher()

    async def refused_attempt(
        self,
        event: str,
        *,
        request: Mapping[str, Any] | None,
        actor: str,
        outcome: str,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """`refuse` in the shape of `AuditLog.record`, for adapters that report (and count) only
        refusals: the chat interactions."""
        await self.refuse(
            actor, reason, request=request, details=details or {}, event=event, count=False
        )

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self._open:
            await asyncio.sleep(min(w.until for w in self._open.values()) - time.monotonic())
            await self.flush(time.monotonic())

    async def flush(self, now: float) -> None:
        """Write one record per closed window that suppressed refusals; forget closed windows."""
        for key, window in list(self._open.items()):
            if now < window.until:
                continue
            del self._open[key]
            if window.suppressed:
                await self._write(window.last, count=window.suppressed, aggregated=True)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush(float("inf"))

    async def _write(
        self, record: Mapping[str, Any], *, count: int, aggregated: bool = False
    ) -> None:
        details = dict(record["details"])
        if aggregated:
            details.update(
                count=count,
                aggregated=True,
                window_seconds=self._window,
                note="the last of the refusals counted in this window",
            )
        try:
            await self._audit.record(
                record["event"],
                request=record["request"],
                actor=record["actor"],
                outcome="refused",
                reason=record["reason"],
                details=details,
            )
        except AuditWriteError:
            metrics.AUDIT_WRITE_FAILURES.inc()
            _log.error("a refused attempt could not be audited", reason=record["reason"])
