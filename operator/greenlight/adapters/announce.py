"""Telling people: announce a pending request once, show the outcome once it is resolved.

The core says what is due (`lifecycle.to_announce`, `lifecycle.to_resolve`) and what the status
becomes (`announced`, `resolved`, `notify_failed`); this module only talks to the notifier, audits
the announcement, and records the result on the object. What was sent is sent: when recording it
loses a race, it is recorded on the fresh object, never sent again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog
from opentelemetry import trace

from greenlight.adapters.auditlog import AuditLog, AuditWriteError
from greenlight.adapters.conflicts import retry_on_conflict
from greenlight.adapters.notifiers import NotificationRef, Notifier, NotifierError
from greenlight.core import lifecycle
from greenlight.core.request import Condition, ConditionType, Request, Status
from greenlight.core.timefmt import now
from greenlight.kube import Kube, NotFound
from greenlight.telemetry import metrics, spans

_log = structlog.get_logger("greenlight.announce")
_tracer = trace.get_tracer("greenlight.operator")
NOTIFY_RETRY = 15.0


@dataclass
class FirstAnnouncement:
    """A new request's announcement, made once across the retries of its first write."""

    ref: NotificationRef | None = None
    failure: str = ""
    tried: bool = False


@dataclass
class Announcer:
    kube: Kube
    audit: AuditLog
    notifier: Notifier
    marks_key: bytes

    async def tell(self, request: Request) -> tuple[Request, str]:
        """Announce or resolve what is due on `request`; return it as recorded, and what failed
        ("" when nothing did; the caller tries again after NOTIFY_RETRY seconds)."""
        status, failure = request.status, ""
        if lifecycle.to_announce(status):
            ref, failure = await self._notify(request)
            if ref is not None:
                await self._audit_notified(request, ref)
                change = _announced(ref, self.notifier.name)
                status = change(status)
        elif status.phase is not None and status.phase.terminal:
            if not status.notifications and self.audit.has(f"{request.uid}:notified"):
                # Announced, then the operator died before recording where: find the
                # announcement again (the Slack notifier returns its earlier message).
                ref, failure = await self._notify(request)
                if ref is not None:
                    status = _announced(ref, self.notifier.name)(status)
            status, failure = await self._resolve(request, status, failure)
        if failure:
            status = lifecycle.notify_failed(status, self.notifier.name, failure, now())
        if status != request.status:
            request = await self._record(request, status)
        return request, failure

    async def first(
        self, request: Request, status: Status, announcement: FirstAnnouncement
    ) -> Status:
        """`status` (a new request's first) with its announcement: sent now, or the one sent
        by an earlier try of the same write (what was sent is never sent again)."""
        if not announcement.tried:
            announcement.tried = True
            pending = replace(request, status=status)
            announcement.ref, announcement.failure = await self._notify(pending)
            if announcement.ref is not None:
                await self._audit_notified(pending, announcement.ref)
        if announcement.ref is None:
            return lifecycle.notify_failed(status, self.notifier.name, announcement.failure, now())
        return _announced(announcement.ref, self.notifier.name)(status)

    async def _notify(self, request: Request) -> tuple[NotificationRef | None, str]:
        started = time.monotonic()
        try:
            with _tracer.start_as_current_span(
                spans.NOTIFY, attributes={spans.ATTR_CHANNEL: self.notifier.name}
            ):
                ref = await self.notifier.notify(request.view())
        except NotifierError as exc:
            metrics.observe_notification(self.notifier.name, "failure", time.monotonic() - started)
            return None, str(exc)
        metrics.observe_notification(self.notifier.name, "success", time.monotonic() - started)
        return ref, ""

    async def _resolve(self, request: Request, status: Status, failure: str) -> tuple[Status, str]:
        done = []
        for entry in lifecycle.to_resolve(status):
            try:
                with _tracer.start_as_current_span(
                    spans.NOTIFY_RESOLVE, attributes={spans.ATTR_CHANNEL: self.notifier.name}
                ):
                    await self.notifier.resolve(
                        request.view(status), NotificationRef(entry.channel, entry.ref)
                    )
            except NotifierError as exc:
                failure = str(exc)
                continue
            done.append(entry)
        return lifecycle.resolved(status, done, now()), failure

    async def _record(self, request: Request, status: Status) -> Request:
        """Write the notifications and the Notified condition; on a conflict, carry the same
        entries over to the fresh object (they describe messages that exist)."""
        first = True

        async def write() -> Request:
            nonlocal first
            current = request
            if not first:
                fresh = await self.kube.get(request.namespace, request.name)
                current = Request.parse(fresh, self.marks_key)
            first = False
            target = replace(
                current.status,
                notifications=status.notifications,
                conditions=_merged(current.status, status),
            )
            written = await self.kube.patch_status(
                request.namespace, request.name, target.to_json(), current.resource_version
            )
            version = str(written["metadata"]["resourceVersion"])
            return replace(current, status=target, resource_version=version)

        try:
            return await retry_on_conflict(write)
        except NotFound:
            return request

    async def _audit_notified(self, request: Request, ref: NotificationRef) -> None:
        try:
            await self.audit.record(
                "notified",
                request=request.subject(),
                actor="greenlight",
                outcome="sent",
                details={"channel": ref.channel, "ref": ref.ref},
                event_id=f"{request.uid}:notified",
            )
        except AuditWriteError as exc:
            metrics.AUDIT_WRITE_FAILURES.inc()
            _log.error("audit write failed for a notification", error=str(exc))


def _announced(ref: NotificationRef, notifier: str) -> Callable[[Status], Status]:
    return lambda status: lifecycle.announced(status, ref.channel, ref.ref, notifier, now())


def _merged(fresh: Status, ours: Status) -> tuple[Condition, ...]:
    """The fresh object's conditions, with our Notified condition."""
    notified = ours.condition(ConditionType.NOTIFIED)
    kept = tuple(c for c in fresh.conditions if c.type is not ConditionType.NOTIFIED)
    return (*kept, notified) if notified is not None else fresh.conditions
