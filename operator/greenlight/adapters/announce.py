"""Telling people: announce a pending request once, show the outcome once it is resolved.

The core says what is due (`lifecycle.to_announce`, `lifecycle.to_resolve`) and what the status
becomes (`announced`, `resolved`, `notify_failed`); this module only talks to the notifier, audits
the announcement, and records the result on the object. What was sent is sent: when recording it
loses a race, it is recorded on the fresh object, never sent again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import structlog
from opentelemetry import trace

from greenlight.adapters.auditlog import AuditLog, AuditWriteError
from greenlight.adapters.conflicts import retry_on_conflict
from greenlight.adapters.notifiers import FollowUp, NotificationRef, Notifier, NotifierError
from greenlight.core import followups, lifecycle
from greenlight.core.durations import format_duration
from greenlight.core.model import Phase
from greenlight.core.policies import EffectivePolicy
from greenlight.core.request import (
    Condition,
    ConditionType,
    Notification,
    NotificationState,
    Request,
    Status,
)
from greenlight.core.timefmt import format_time, now
from greenlight.kube import Kube, NotFound
from greenlight.telemetry import metrics, spans, traces

_log = structlog.get_logger("greenlight.announce")
_tracer = trace.get_tracer("greenlight.operator")
NOTIFY_RETRY = 15.0


@dataclass
class FirstAnnouncement:
    """A new request's announcement, made once across the retries of its first write."""

    sent: list[tuple[str, str, NotificationRef]] = field(default_factory=list)
    failure: str = ""
    failed_via: str = ""
    tried: bool = False


@dataclass
class Announcer:
    kube: Kube
    audit: AuditLog
    notifiers: Sequence[Notifier]
    marks_key: bytes
    follow_up_scale: float = 1.0
    # uid -> the (notifier, channel) tried so far, for requests created while this replica
    # watched that have not been told yet: nothing can have been posted for them elsewhere.
    _fresh: dict[str, set[tuple[str, str]]] = field(default_factory=dict, repr=False)

    def born(self, uid: str) -> None:
        """`uid` was created while this replica watched (a watch's ADDED event): its first
        announcement on each channel need not look for an earlier one."""
        self._fresh.setdefault(uid, set())

    def forget(self, uid: str) -> None:
        """Drop what is kept about `uid` (deleted, or told)."""
        self._fresh.pop(uid, None)

    def clear(self) -> None:
        self._fresh.clear()

    @property
    def immediate(self) -> bool:
        """Every notifier delivers locally (the console): a new request is told before its
        first status write."""
        return all(n.immediate for n in self.notifiers)

    def targets(self, request: Request) -> tuple[tuple[str, str], ...]:
        """Every (notifier, channel) this request is announced on."""
        view = request.view()
        return tuple((n.name, channel) for n in self.notifiers for channel in n.channels(view))

    def due(self, request: Request) -> tuple[tuple[str, str], ...]:
        """The announcements still owed to `request`."""
        return lifecycle.to_announce(request.status, self.targets(request))

    def lost(self, request: Request) -> tuple[tuple[str, str], ...]:
        """Announcements audited as sent but missing from the status of a terminal request
        (the operator died between sending and recording): found again and resolved."""
        status = request.status
        if status.phase is None or not status.phase.terminal:
            return ()
        return tuple(
            (via, to)
            for via, to in self.targets(request)
            if not any(n.covers(via, to) for n in status.notifications)
            and self.audit.has(notified_event(request.uid, via, to))
        )

    async def tell(self, request: Request, *, record: bool = True) -> tuple[Request, str]:
        """Announce or resolve what is due on `request`; return it as recorded (or, without
        `record`, as it is to be recorded), and what failed ("" when nothing did; the caller
        tries again after NOTIFY_RETRY seconds)."""
        status, failures = request.status, []
        for via, to in self.due(request) or self.lost(request):
            ref, failure = await self._notify(request, via, to)
            if ref is not None:
                if status.phase is Phase.PENDING:
                    await self._audit_notified(request, via, to, ref)
                status = _announced(ref, via, to)(status)
            if failure:
                failures.append((via, failure))
        self.forget(request.uid)  # any later try may follow one that reached the chat
        if status.phase is not None and status.phase.terminal:
            status, failed = await self._resolve(request, status)
            failures.extend(failed)
        for via, failure in failures:
            status = lifecycle.notify_failed(status, via, failure, now())
        if not record:
            request = replace(request, status=status)
        elif status != request.status:
            request = await self._record(request, status)
        return request, "; ".join(f"{via}: {failure}" for via, failure in failures)

    async def first(
        self, request: Request, status: Status, announcement: FirstAnnouncement
    ) -> Status:
        """`status` (a new request's first) with its announcements: sent now, or the ones sent
        by an earlier try of the same write (what was sent is never sent again)."""
        pending = replace(request, status=status)
        if not announcement.tried:
            announcement.tried = True
            for via, to in lifecycle.to_announce(status, self.targets(pending)):
                ref, failure = await self._notify(pending, via, to)
                if ref is not None:
                    await self._audit_notified(pending, via, to, ref)
                    announcement.sent.append((via, to, ref))
                if failure:
                    announcement.failure = failure
                    announcement.failed_via = via
            self.forget(request.uid)
        for via, to, ref in announcement.sent:
            status = _announced(ref, via, to)(status)
        if announcement.failure:
            status = lifecycle.notify_failed(
                status, announcement.failed_via, announcement.failure, now()
            )
        return status

    def resolved_first(self, status: Status) -> tuple[Status, tuple[Notification, ...]]:
        """A terminal `status` to write with an immediate notifier's messages already marked
        as showing the outcome (one write instead of two), and those messages: the caller
        updates them once that write succeeded (`show_resolved`). Other notifiers' messages are
        updated first and recorded after, as what is recorded must have happened."""
        if not self.immediate or status.phase is None or not status.phase.terminal:
            return status, ()
        entries = self._resolvable(status)
        if not entries:
            return status, ()
        return lifecycle.resolved(status, entries, now()), entries

    async def show_resolved(self, request: Request, entries: Sequence[Notification]) -> None:
        """Update the messages `resolved_first` marked, now that the status says so. An
        immediate notifier writes locally (the console); a failure is logged, not retried."""
        for entry in entries:
            via = self._via(entry)
            try:
                await self._notifier(via).resolve(
                    request.view(), NotificationRef(entry.channel, entry.ref)
                )
            except NotifierError as exc:
                _log.warning("could not show the outcome", notifier=via, error=str(exc))

    async def follow_up(self, request: Request) -> tuple[Request, str]:
        """Send the reminders and escalation steps due on a pending request (its effective
        policy's `reminders` and `escalation`), then record how far they went. Each is audited
        before it is sent; an escalation step first announces the request in the step's
        channels. Progress is recorded only when every announcement got the note, so a
        failure is retried (a Slack notifier finds a note it already posted and skips it)."""
        policy, status = request.policy, request.status
        if policy is None or status.phase is not Phase.PENDING:
            return request, ""
        due = followups.due(
            schedule_of(policy, self.follow_up_scale),
            request.created,
            request.expires_at,
            now(),
            status.follow_ups,
        )
        if not due:
            return request, ""
        reached = replace(status, follow_ups=followups.after(status.follow_ups, due))
        request, failure = await self.tell(replace(request, status=reached), record=False)
        notes = _notes(request, due)
        for note in notes:
            await self._audit_follow_up(request, note)
        failures = ([failure] if failure else []) + await self._remind(request, notes)
        final = (
            request.status
            if not failures
            else replace(request.status, follow_ups=status.follow_ups)
        )
        request = await self._record(request, final, follow_ups=True)
        return request, "; ".join(failures)

    async def _remind(self, request: Request, notes: Sequence[FollowUp]) -> list[str]:
        """Add `notes` to every message sent for `request`; what failed, per notifier."""
        failures = []
        for entry in request.status.notifications:
            via = self._via(entry)
            if entry.state is not NotificationState.SENT or not self._has(via):
                continue
            for note in notes:
                try:
                    await self._notifier(via).remind(
                        request.view(), NotificationRef(entry.channel, entry.ref), note
                    )
                except NotifierError as exc:
                    failures.append(f"{via}: {exc}")
                    continue
                metrics.count_follow_up(note.key.split("-")[0], via)
        return failures

    def _has(self, via: str) -> bool:
        return any(n.name == via for n in self.notifiers)

    def _via(self, entry: Notification) -> str:
        """The notifier that sent `entry` (entries recorded before `via` existed: the first)."""
        return entry.via or self.notifiers[0].name

    def _resolvable(self, status: Status) -> tuple[Notification, ...]:
        """The messages still to show the outcome of a terminal `status`, of notifiers still
        configured (nothing can update a message of one no longer configured)."""
        return tuple(e for e in lifecycle.to_resolve(status) if self._has(self._via(e)))

    async def _audit_follow_up(self, request: Request, note: FollowUp) -> None:
        try:
            await self.audit.record(
                "escalated" if note.key.startswith("escalation") else "reminded",
                request=request.subject(),
                actor="greenlight",
                outcome="sent",
                details={
                    "step": note.key,
                    "slackUserGroups": list(note.slack_user_groups),
                    "teamsTags": list(note.teams_tags),
                },
                event_id=f"{request.uid}:{note.key}",
            )
        except AuditWriteError as exc:
            metrics.AUDIT_WRITE_FAILURES.inc()
            _log.error("audit write failed for a follow-up", error=str(exc))

    def _notifier(self, via: str) -> Notifier:
        return next(n for n in self.notifiers if n.name == via)

    async def _notify(
        self, request: Request, via: str, to: str
    ) -> tuple[NotificationRef | None, str]:
        started = time.monotonic()
        tried = self._fresh.get(request.uid)
        fresh = tried is not None and (via, to) not in tried
        if tried is not None:
            tried.add((via, to))
        try:
            with traces.child_span(_tracer, spans.NOTIFY, attributes={spans.ATTR_CHANNEL: via}):
                ref = await self._notifier(via).notify(request.view(), to, fresh=fresh)
        except NotifierError as exc:
            metrics.observe_notification(via, "failure", time.monotonic() - started)
            return None, str(exc)
        metrics.observe_notification(via, "success", time.monotonic() - started)
        return ref, ""

    async def _resolve(
        self, request: Request, status: Status
    ) -> tuple[Status, list[tuple[str, str]]]:
        done, failures = [], []
        for entry in self._resolvable(status):
            via = self._via(entry)
            try:
                with traces.child_span(
                    _tracer, spans.NOTIFY_RESOLVE, attributes={spans.ATTR_CHANNEL: via}
                ):
                    await self._notifier(via).resolve(
                        request.view(status), NotificationRef(entry.channel, entry.ref)
                    )
            except NotifierError as exc:
                failures.append((via, str(exc)))
                continue
            done.append(entry)
        return lifecycle.resolved(status, done, now()), failures

    async def _record(
        self, request: Request, status: Status, *, follow_ups: bool = False
    ) -> Request:
        """Write the notifications and the Notified condition (and, with `follow_ups`, the
        reminders and escalation steps sent); on a conflict, carry the same entries over to
        the fresh object (they describe messages that exist)."""
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
            if follow_ups:
                target = replace(target, follow_ups=status.follow_ups)
            written = await self.kube.patch_status(
                request.namespace, request.name, target.to_json(), current.resource_version
            )
            version = str(written["metadata"]["resourceVersion"])
            return replace(current, status=target, resource_version=version)

        try:
            return await retry_on_conflict(write)
        except NotFound:
            return request

    async def _audit_notified(
        self, request: Request, via: str, to: str, ref: NotificationRef
    ) -> None:
        try:
            await self.audit.record(
                "notified",
                request=request.subject(),
                actor="greenlight",
                outcome="sent",
                details={"notifier": via, "channel": ref.channel, "ref": ref.ref},
                event_id=notified_event(request.uid, via, to),
            )
        except AuditWriteError as exc:
            metrics.AUDIT_WRITE_FAILURES.inc()
            _log.error("audit write failed for a notification", error=str(exc))


def schedule_of(policy: EffectivePolicy, scale: float = 1.0) -> followups.Schedule:
    """The policy's reminder and escalation times, each divided by `scale` (the setting
    GREENLIGHT_FOLLOW_UP_SCALE, 1 in production: tests run the schedule in seconds)."""
    every = policy.reminders_every / scale if policy.reminders_every else None
    return followups.Schedule(every, tuple(step.after / scale for step in policy.escalation))


def _notes(request: Request, due: followups.Due) -> list[FollowUp]:
    ref = f"{request.namespace}/{request.name}"
    expires = format_time(request.expires_at)
    notes = []
    if due.reminder:
        notes.append(
            FollowUp(
                f"reminder-{due.reminder}",
                f"Reminder: {ref} ({request.spec.action} on {request.spec.target}) is still "
                f"waiting for a decision; it expires at {expires}.",
            )
        )
    policy = request.policy
    assert policy is not None
    for number in due.escalations:
        step = policy.escalation[number - 1]
        notes.append(
            FollowUp(
                f"escalation-{number}",
                f"Escalation {number}: {ref} ({request.spec.action} on {request.spec.target}) "
                f"has had no decision for {format_duration(step.after, days=False)}; "
                f"it expires at {expires}. Please review it.",
                slack_user_groups=step.mention.slack_user_groups,
                teams_tags=step.mention.teams_tags,
            )
        )
    return notes


def notified_event(uid: str, via: str, to: str) -> str:
    """The audit event id of one announcement: written once, whatever retries follow."""
    return f"{uid}:notified:{via}:{to}"


def _announced(ref: NotificationRef, via: str, to: str) -> Callable[[Status], Status]:
    return lambda status: lifecycle.announced(status, ref.channel, ref.ref, via, now(), to=to)


def _merged(fresh: Status, ours: Status) -> tuple[Condition, ...]:
    """The fresh object's conditions, with our Notified condition."""
    notified = ours.condition(ConditionType.NOTIFIED)
    kept = tuple(c for c in fresh.conditions if c.type is not ConditionType.NOTIFIED)
    return (*kept, notified) if notified is not None else fresh.conditions
