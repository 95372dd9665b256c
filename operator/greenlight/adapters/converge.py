"""Bring one ApprovalRequest's status up to date: read, decide, write, then act.

This is the one place that writes a request's phase. Whatever woke it (a watch event, a list,
the expiry clock), it parses the object, lets the core decide
(`lifecycle.reconcile`), makes the audit records durable, writes the status with the object's
resourceVersion as a precondition (two writers can never both transition it), and only then
counts and tells people (adapters/announce.py). A conflict re-reads and decides again; an audit
failure leaves the phase as it was and is retried; nothing here decides anything itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from opentelemetry import trace

from greenlight.adapters.announce import (
    NOTIFY_RETRY,
    Announcer,
    FirstAnnouncement,
    schedule_of,
)
from greenlight.adapters.auditlog import AuditLog, AuditWriteError, Entry
from greenlight.adapters.conflicts import KeyedLocks, StillConflicting, retry_on_conflict
from greenlight.adapters.expiry import ExpiryClock
from greenlight.adapters.ledger import Ledger
from greenlight.core import followups, lifecycle, receipts
from greenlight.core.dsse import Signer
from greenlight.core.model import Phase
from greenlight.core.request import Notification, Request, Status
from greenlight.core.timefmt import now
from greenlight.kube import Kube, NotFound
from greenlight.telemetry import logs, metrics, spans, traces

_log = structlog.get_logger("greenlight.converge")
AUDIT_RETRY = 5.0
CONFLICT_RETRY = 1.0
OUTCOME_LABELS = {
    Phase.APPROVED: "approved",
    Phase.DENIED: "denied",
    Phase.EXPIRED: "expired",
    Phase.CANCELLED: "cancelled",
}
SPANS = {"create": spans.REQUEST_CREATE, "expiry": spans.REQUEST_EXPIRE}


class RetryLater(Exception):
    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class Converger:
    kube: Kube
    audit: AuditLog
    announcer: Announcer
    marks_key: bytes
    ledger: Ledger = field(default_factory=Ledger)
    signer: Signer | None = None  # signs the receipt of every request that becomes Approved

    def __post_init__(self) -> None:
        self.clock = ExpiryClock(self._due)
        self._locks = KeyedLocks()

    def listed(self, body: Mapping[str, Any]) -> bool:
        """An object as a list showed it (at start, or after a gap in the watch): remembered,
        with its expiry armed, when nothing is left to do. True when something is (created or
        decided while no replica watched, or past its expiry): the caller reconciles it."""
        try:
            request = Request.parse(body, self.marks_key)
        except (KeyError, ValueError, RecursionError) as exc:
            _log.warning("unreadable request skipped", error=str(exc)[:200])
            return False
        if self.ledger.stale(request.uid, request.resource_version):
            return False
        if self.settled(request):
            self.track(request)
            return False
        self.ledger.place(request)
        return True

    def stand_by(self) -> None:
        """Another replica is in charge: forget every armed expiry and every request."""
        self.clock.clear()
        self.ledger.clear()
        self.announcer.clear()

    async def on_event(self, kind: str | None, body: Mapping[str, Any]) -> None:
        """A watch event: deleted, or possibly something to do."""
        meta = body.get("metadata") or {}
        uid, version = str(meta.get("uid", "")), str(meta.get("resourceVersion", ""))
        if kind == "DELETED":
            await self.deleted(body)
            return
        if kind == "ADDED" and self.ledger.locate(uid) is None:
            self.announcer.born(uid)  # created after this replica listed: nobody else told it
        if not self.ledger.stale(uid, version):
            await self.reconcile(str(meta["namespace"]), str(meta["name"]), body)

    async def reconcile(
        self,
        namespace: str,
        name: str,
        body: Mapping[str, Any] | None = None,
        cause: str | None = None,
    ) -> None:
        """Bring one object up to date; what cannot be done now is retried by the clock."""
        try:
            async with self._locks.hold((namespace, name)) as contended:
                # Someone else changed it meanwhile: read it afresh.
                await self._reconcile(namespace, name, None if contended else body, cause)
        except RetryLater as exc:
            _log.warning("will retry", namespace=namespace, name=name, error=str(exc))
            self.clock.retry(exc.delay, namespace, name)

    async def _due(self, namespace: str, name: str) -> None:
        await self.reconcile(namespace, name, None, cause="expiry")

    async def _reconcile(
        self, namespace: str, name: str, body: Mapping[str, Any] | None, cause: str | None
    ) -> None:
        if body is None:
            try:
                body = await self.kube.get(namespace, name)
            except NotFound:
                return
        request = Request.parse(body, self.marks_key)
        if cause is None:
            cause = "create" if request.status.phase is None else "update"
        with (
            logs.bind_request(
                request.spec.workflow_id, request.spec.task_id, namespace=namespace, name=name
            ),
            traces.request_span(
                SPANS.get(cause, spans.REQUEST_DECIDE),
                request.traceparent,
                deferred=cause != "create",
                attributes={
                    spans.ATTR_REQUEST_NAMESPACE: namespace,
                    spans.ATTR_REQUEST_NAME: name,
                    spans.ATTR_WORKFLOW_ID: request.spec.workflow_id,
                },
            ) as span,
        ):
            decided = await self._decide(request, body, span)
            if decided is not None:
                await self._act(*decided)

    async def _act(self, current: Request, failure: str) -> None:
        """Tell people what the decision left due, remember the request, retry what failed."""
        if not failure:
            current, failure = await self.announcer.tell(current)
        if not failure:
            current, failure = await self.announcer.follow_up(current)
        self.track(current)
        if failure:
            _log.error(
                "notification failed; retrying",
                uid=current.uid,
                error=failure,
                retry_in_seconds=NOTIFY_RETRY,
            )
            self.clock.retry(NOTIFY_RETRY, current.namespace, current.name)

    async def _decide(
        self, request: Request, body: Mapping[str, Any], span: trace.Span
    ) -> tuple[Request, str] | None:
        """Decide and write the status; None when the object is gone. With an immediate
        notifier (the console) a new request is announced before its first write, so it is
        written once, Pending and announced; the second value says what failed in that
        announcement ("" when nothing did)."""
        first, announcement = True, FirstAnnouncement()
        shown: tuple[Notification, ...] = ()

        async def step() -> Request:
            nonlocal first, request, body, shown
            if not first:
                body = await self.kube.get(request.namespace, request.name)
                request = Request.parse(body, self.marks_key)
            first = False
            transition = lifecycle.reconcile(request, now())
            if self.signer is not None:
                transition = receipts.issue(request, transition, self.signer)
            # Audit first, also when the status stays as it is (a late record refused on a
            # terminal request): records are idempotent by event id.
            await self._audit(request, body, transition)
            if not transition.changes(request.status):
                return request
            status = await self._announced_first(request, transition, announcement)
            status, shown = self.announcer.resolved_first(status)
            decided = await self._write(request, status)
            self._count(decided, transition, span)
            _count_execution(request, decided)
            return decided

        try:
            decided = await retry_on_conflict(step)
        except NotFound:
            return None
        except StillConflicting as exc:
            raise RetryLater(str(exc), CONFLICT_RETRY) from exc
        await self.announcer.show_resolved(decided, shown)
        return decided, announcement.failure

    async def _write(self, request: Request, status: Status) -> Request:
        """Write `status`, only over the version `request` was read at (else Conflict)."""
        written = await self.kube.patch_status(
            request.namespace, request.name, status.to_json(), request.resource_version
        )
        version = str(written["metadata"]["resourceVersion"])
        return replace(request, status=status, resource_version=version)

    async def _announced_first(
        self, request: Request, transition: lifecycle.Transition, first: FirstAnnouncement
    ) -> Status:
        """The status to write: a new request told by an immediate notifier carries its
        announcement already (one write instead of two)."""
        status = transition.status
        if (
            transition.entered is Phase.PENDING
            and self.announcer.immediate
            and self.announcer.due(replace(request, status=status))
        ):
            status = await self.announcer.first(request, status, first)
        return status

    async def _audit(
        self, request: Request, body: Mapping[str, Any], transition: lifecycle.Transition
    ) -> None:
        subject = request.subject() | {"phase": _phase(transition)}
        entries = []
        for entry in transition.audit:
            details = dict(entry.details)
            if entry.event == "requested":
                details["spec"] = body.get("spec") or {}  # the full request, once
            entries.append(
                Entry(
                    entry.event,
                    subject,
                    entry.actor,
                    entry.outcome,
                    entry.reason,
                    details,
                    entry.event_id,
                )
            )
        try:
            if entries:  # one group, one fsync, for all of a transition's records
                await self.audit.record_all(entries)
        except AuditWriteError as exc:
            metrics.AUDIT_WRITE_FAILURES.inc()
            _log.error("audit write failed; the transition is held back", error=str(exc))
            await self._hold_back(request, str(exc))
            raise RetryLater(str(exc), AUDIT_RETRY) from exc

    async def _hold_back(self, request: Request, error: str) -> None:
        """Show the audit failure on the object (condition Audited=False); the phase stays."""
        if request.status.phase is None:
            return
        status = lifecycle.audit_held_back(request.status, error, now())
        try:
            await self.kube.patch_status(
                request.namespace, request.name, status.to_json(), request.resource_version
            )
        except Exception as exc:
            _log.warning("could not show the audit failure on the object", error=str(exc))

    def settled(self, request: Request) -> bool:
        """Whether reconciling `request` now would do nothing: no status write, no audit record
        not yet written, no message to send or update."""
        status = request.status
        if status.phase is None or lifecycle.to_resolve(status):
            return False
        if self.announcer.due(request) or self.announcer.lost(request):
            return False
        if status.phase is Phase.PENDING and request.policy is not None:
            schedule = schedule_of(request.policy, self.announcer.follow_up_scale)
            if followups.due(
                schedule, request.created, request.expires_at, now(), status.follow_ups
            ):
                return False
        transition = lifecycle.reconcile(request, now())
        return not transition.changes(status) and all(
            self.audit.has(entry.event_id) for entry in transition.audit
        )

    def track(self, request: Request) -> None:
        """Remember the request as it is now; arm its expiry while it is pending."""
        self.ledger.saw(request)
        if request.status.phase is Phase.PENDING:
            wake = request.expires_at
            if request.policy is not None:
                follow_up = followups.next_at(
                    schedule_of(request.policy, self.announcer.follow_up_scale),
                    request.created,
                    request.expires_at,
                    request.status.follow_ups,
                )
                wake = min(wake, follow_up or wake)
            self.clock.arm(wake.timestamp(), request.namespace, request.name)
        else:
            self.clock.forget(request.namespace, request.name)

    async def deleted(self, body: Mapping[str, Any]) -> None:
        """Forget a deleted request everywhere, and put its deletion on record."""
        meta = body.get("metadata") or {}
        uid, namespace, name = str(meta.get("uid", "")), str(meta["namespace"]), str(meta["name"])
        async with self._locks.hold((namespace, name)):  # after a reconcile still in flight
            deleters = self.ledger.deleters(uid)
            self.ledger.forget(uid)
            self.announcer.forget(uid)
            if not self.ledger.lives_at(namespace, name):  # not recreated under the same name
                self.clock.forget(namespace, name)
        try:
            request = Request.parse(body, self.marks_key)
            subject = request.subject()
        except (ValueError, KeyError):
            subject = {"namespace": namespace, "name": name, "uid": uid}
        details: dict[str, Any]
        if len(deleters) == 1:
            actor, details = deleters[0], {"deleter": "as the admission review named the caller"}
        elif deleters:
            actor = "unknown"
            details = {
                "deleter": "the admission reviews of deletes named several callers",
                "named": list(deleters),
            }
        else:
            actor, details = "unknown", {"deleter": "no admission review of the delete was seen"}
        try:
            await self.audit.record(
                "deleted",
                request=subject,
                actor=actor,
                outcome="deleted",
                details=details,
                event_id=f"{uid}:deleted",
            )
        except AuditWriteError as exc:
            metrics.AUDIT_WRITE_FAILURES.inc()
            _log.error("audit write failed for a deletion", error=str(exc), name=name)

    def _event(self, request: Request, reason: str, message: str, kind: str = "Normal") -> None:
        """A Kubernetes Event on the object, for `kubectl describe` (posted in the background)."""
        self.kube.post_event(request.namespace, request.name, request.uid, reason, message, kind)

    def _count(self, request: Request, transition: lifecycle.Transition, span: trace.Span) -> None:
        if transition.entered is Phase.PENDING:
            metrics.REQUESTS_CREATED.inc()
            if lifecycle.verified(request.status):
                what = f"{request.spec.action} on {request.spec.target} awaits approval"
                self._event(request, "Requested", what)
            else:
                self._event(request, "Unverified", _UNVERIFIED, kind="Warning")
        decision = request.status.decision
        if transition.entered is None or not transition.entered.terminal or decision is None:
            return
        if transition.entered is Phase.CANCELLED:
            span.update_name(spans.REQUEST_CANCEL)
        span.set_attribute(spans.ATTR_OUTCOME, decision.outcome.value)
        span.set_attribute(spans.ATTR_VIA, decision.via.value)
        metrics.observe_decision(
            OUTCOME_LABELS[transition.entered],
            decision.via.value,
            (decision.at - request.created).total_seconds(),
            traces.trace_id_of(request.traceparent or None),
        )
        message = f"{decision.outcome.value} by {decision.by} via {decision.via.value}"
        if decision.reason:
            message += f": {decision.reason}"
        self._event(request, decision.outcome.value, message)
        _log.info(
            "request resolved",
            namespace=request.namespace,
            name=request.name,
            outcome=decision.outcome.value,
            by=decision.by,
            via=decision.via.value,
        )


def _count_execution(before: Request, after: Request) -> None:
    """Receipts issued, executions started and finished by this write (counted once: the
    write that changed them), and the execution's span in the request's trace."""
    old, new = before.status, after.status
    if new.receipt is not None and old.receipt is None:
        metrics.RECEIPTS_ISSUED.inc()
    execution = new.execution
    if execution is None or execution == old.execution:
        return
    if old.execution is None:
        metrics.EXECUTIONS_STARTED.inc()
        if new.decision is not None:
            delay = (execution.started_at - new.decision.at).total_seconds()
            metrics.EXECUTION_START_DELAY.observe(max(delay, 0.0))
    if execution.finished_at is not None:
        metrics.observe_execution(
            lifecycle.execution_result(execution),
            (execution.finished_at - execution.started_at).total_seconds(),
        )
        traces.record_span(
            spans.EXECUTION,
            after.traceparent or None,
            execution.started_at,
            execution.finished_at,
            {
                spans.ATTR_REQUEST_NAMESPACE: after.namespace,
                spans.ATTR_REQUEST_NAME: after.name,
                spans.ATTR_EXECUTION_CLAIMED_BY: execution.claimed_by,
                spans.ATTR_EXECUTION_EXIT_CODE: str(execution.exit_code),
            },
        )


def _phase(transition: lifecycle.Transition) -> str | None:
    return transition.status.phase.value if transition.status.phase else None


_UNVERIFIED = (
    "no requested-by stamp issued by Greenlight: no decision will be taken on this request; "
    "re-create it with `greenlight resubmit NAME`"
)
