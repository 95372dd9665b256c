"""Apply the lifecycle to one object: audit, write status, then tell people.

This is the one place that writes an ApprovalRequest's status. Whatever woke it (a kopf handler,
the expiry timer, a restart), it runs the pure `lifecycle.reconcile`, makes the audit records
durable, writes the status with the object's resourceVersion as a precondition (so two writers
can never both transition it), and only then notifies and counts. A conflict re-reads and
re-runs; an audit failure leaves the status as it was and is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import kopf
import structlog
from opentelemetry import trace

from greenlight.adapters.auditlog import AuditWriteError, request_summary
from greenlight.adapters.kube import Conflict, NotFound
from greenlight.adapters.notifiers import NotificationRef, NotifierError
from greenlight.core import lifecycle
from greenlight.core.model import ANN_TRACEPARENT, Phase
from greenlight.core.timefmt import format_time, now, parse_time
from greenlight.telemetry import logs, metrics, spans, traces

if TYPE_CHECKING:
    from greenlight.adapters.runtime import Runtime

_log = structlog.get_logger("greenlight.reconciler")
MAX_CONFLICTS = 8
OUTCOME_LABELS = {
    Phase.APPROVED: "approved",
    Phase.DENIED: "denied",
    Phase.EXPIRED: "expired",
    Phase.CANCELLED: "cancelled",
}


class RetryLater(Exception):
    """Something outside our control failed; the caller retries after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class PendingBook:
    """Which requests are pending (for the pending gauges), keyed by uid."""

    created: dict[str, float] = field(default_factory=dict)

    def pending(self, uid: str, created_at: datetime) -> None:
        self.created[uid] = created_at.timestamp()
        metrics.REQUESTS_PENDING.set(len(self.created))

    def done(self, uid: str) -> None:
        self.created.pop(uid, None)
        metrics.REQUESTS_PENDING.set(len(self.created))

    def oldest_age(self) -> float:
        return time.time() - min(self.created.values()) if self.created else 0.0


SPANS = {"create": spans.REQUEST_CREATE, "expiry": spans.REQUEST_EXPIRE}


async def reconcile(
    runtime: Runtime,
    namespace: str,
    name: str,
    body: Mapping[str, Any] | None,
    cause: str = "update",
) -> None:
    """Bring one object's status up to date. Raises RetryLater for transient failures.

    `cause` names what woke us (create, update, resume, expiry): creation continues the
    orchestrator's trace, everything later starts a new trace linked to it.
    """
    lock = runtime.lock(namespace, name)
    if lock.locked():
        body = None  # another reconcile is changing it: read it afresh once it is done
    async with lock:
        await _reconcile_locked(runtime, namespace, name, body, cause)


async def _reconcile_locked(
    runtime: Runtime, namespace: str, name: str, body: Mapping[str, Any] | None, cause: str
) -> None:
    obj: Mapping[str, Any] | None = body
    if obj is None:
        try:
            obj = await runtime.kube.get(namespace, name)
        except NotFound:
            return
    spec = obj.get("spec") or {}
    requester = spec.get("requester") or {}
    with (
        logs.bind_request(
            str(requester.get("workflowId", "")),
            str(requester.get("taskId", "")),
            namespace=namespace,
            name=name,
        ),
        traces.request_span(
            SPANS.get(cause, spans.REQUEST_DECIDE),
            _annotations(obj).get(ANN_TRACEPARENT),
            deferred=cause != "create",
            attributes={
                spans.ATTR_REQUEST_NAMESPACE: namespace,
                spans.ATTR_REQUEST_NAME: name,
                spans.ATTR_WORKFLOW_ID: str(requester.get("workflowId", "")),
            },
        ) as span,
    ):
        await _converge(runtime, namespace, name, obj, span)


async def _converge(
    runtime: Runtime, namespace: str, name: str, first: Mapping[str, Any], span: trace.Span
) -> None:
    obj: Mapping[str, Any] | None = first
    for _ in range(MAX_CONFLICTS):
        if obj is None:
            try:
                obj = await runtime.kube.get(namespace, name)
            except NotFound:
                return
        transition = lifecycle.reconcile(obj, now())
        # Audit first, also when the status stays as it is (a late record refused on a terminal
        # request): records are idempotent by event id, so a re-run writes nothing twice.
        await _audit(runtime, obj, transition)
        if transition.changes(obj):
            _clear_audit_failure(transition.status)
            try:
                obj = await runtime.kube.patch_status(
                    namespace, name, transition.status, str(obj["metadata"]["resourceVersion"])
                )
            except Conflict:
                obj = None
                continue
            except NotFound:
                return
            _count(runtime, obj, transition)
            if transition.entered is not None and transition.entered.terminal:
                decision = transition.status["decision"]
                if transition.entered is Phase.CANCELLED:
                    span.update_name(spans.REQUEST_CANCEL)
                span.set_attribute(spans.ATTR_OUTCOME, decision["outcome"])
                span.set_attribute(spans.ATTR_VIA, decision["via"])
        await _tell(runtime, obj)
        _track(runtime, obj)
        return
    raise RetryLater(f"{namespace}/{name} kept changing while being reconciled", delay=1.0)


async def _audit(
    runtime: Runtime, obj: Mapping[str, Any], transition: lifecycle.Transition
) -> None:
    request = request_summary({**obj, "status": transition.status})
    try:
        for entry in transition.audit:
            await runtime.audit.record(
                entry.event,
                request=request,
                actor=entry.actor,
                outcome=entry.outcome,
                reason=entry.reason,
                details=entry.details,
                event_id=entry.event_id,
            )
    except AuditWriteError as exc:
        metrics.AUDIT_WRITE_FAILURES.inc()
        _log.error("audit write failed; the transition is held back", error=str(exc))
        await _surface_audit_failure(runtime, obj, str(exc))
        raise RetryLater(str(exc), delay=5.0) from exc


async def _surface_audit_failure(runtime: Runtime, obj: Mapping[str, Any], error: str) -> None:
    """Show the failure on the object (condition Audited=False) without changing its phase."""
    status = dict(obj.get("status") or {})
    if not status.get("phase"):
        return
    lifecycle.set_condition(status, "Audited", "False", "AuditWriteFailed", error, now())
    meta = obj["metadata"]
    try:
        await runtime.kube.patch_status(
            meta["namespace"], meta["name"], status, meta["resourceVersion"]
        )
    except (Conflict, NotFound):
        return


def _clear_audit_failure(status: dict[str, Any]) -> None:
    if any(c.get("type") == "Audited" for c in status.get("conditions") or ()):
        lifecycle.set_condition(
            status,
            "Audited",
            "True",
            "AuditWritten",
            "audit records are being written again",
            now(),
        )


def _count(runtime: Runtime, obj: Mapping[str, Any], transition: lifecycle.Transition) -> None:
    meta = obj["metadata"]
    if transition.entered is Phase.PENDING:
        metrics.REQUESTS_CREATED.inc()
        _event(obj, reason="Requested", message=_requested_message(obj))
    if transition.entered is not None and transition.entered.terminal:
        decision = transition.status["decision"]
        created = parse_time(meta["creationTimestamp"])
        metrics.observe_decision(
            OUTCOME_LABELS[transition.entered],
            decision["via"],
            (parse_time(decision["at"]) - created).total_seconds(),
            traces.trace_id_of(_annotations(obj).get(ANN_TRACEPARENT)),
        )
        message = f"{decision['outcome']} by {decision['by']} via {decision['via']}"
        if decision.get("reason"):
            message += f": {decision['reason']}"
        _event(obj, reason=decision["outcome"], message=message)
        _log.info(
            "request resolved",
            namespace=meta["namespace"],
            name=meta["name"],
            outcome=decision["outcome"],
            by=decision["by"],
            via=decision["via"],
        )


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _event(obj: Mapping[str, Any], *, reason: str, message: str) -> None:
    """A Kubernetes Event on the object (kopf posts it in the background).

    `kopf.event`, not `kopf.info`: the operator raises kopf's posting level to keep kopf's own
    log chatter out of Events, and `kopf.info` obeys that level, so these would be dropped."""
    kopf.event(
        kopf.Body(cast(kopf.RawBody, dict(obj))), type="Normal", reason=reason, message=message
    )


def _requested_message(obj: Mapping[str, Any]) -> str:
    spec = obj.get("spec") or {}
    return f"{spec.get('action')} on {spec.get('target')} awaits approval"


async def _tell(runtime: Runtime, obj: Mapping[str, Any]) -> None:
    """Post the notification once; update it once the request is resolved."""
    status = obj.get("status") or {}
    if status.get("phase") == Phase.PENDING.value and not status.get("notifications"):
        # The body may lag behind our own earlier status write (watch events arrive late):
        # read the object before posting, so a request is never announced twice.
        try:
            obj = await runtime.kube.get(obj["metadata"]["namespace"], obj["metadata"]["name"])
        except NotFound:
            return
        status = obj.get("status") or {}
    phase = Phase(status.get("phase", Phase.PENDING.value))
    entries: list[dict[str, Any]] = [dict(e) for e in status.get("notifications") or ()]
    request = lifecycle.view(obj)
    notifier = runtime.notifier
    changed, failure = False, ""
    if phase is Phase.PENDING and not entries:
        started = time.monotonic()
        try:
            with trace.get_tracer("greenlight.operator").start_as_current_span(
                spans.NOTIFY, attributes={spans.ATTR_CHANNEL: notifier.name}
            ):
                ref = await notifier.notify(request)
        except NotifierError as exc:
            metrics.observe_notification(notifier.name, "failure", time.monotonic() - started)
            failure = str(exc)
        else:
            metrics.observe_notification(notifier.name, "success", time.monotonic() - started)
            entries.append(
                {"channel": ref.channel, "ref": ref.ref, "state": "sent", "at": format_time(now())}
            )
            changed = True
            await _audit_notified(runtime, obj, ref)
    elif phase.terminal:
        if not entries and runtime.audit.has(f"{request.uid}:notified"):
            # Announced, then the operator died before recording where: find the announcement
            # again (the Slack notifier returns its earlier message) so that it gets resolved.
            try:
                ref = await notifier.notify(request)
            except NotifierError as exc:
                failure = str(exc)
            else:
                entries.append(
                    {
                        "channel": ref.channel,
                        "ref": ref.ref,
                        "state": "sent",
                        "at": format_time(now()),
                    }
                )
                changed = True
        for entry in entries:
            if entry.get("state") != "sent":
                continue
            try:
                with trace.get_tracer("greenlight.operator").start_as_current_span(
                    spans.NOTIFY_RESOLVE, attributes={spans.ATTR_CHANNEL: notifier.name}
                ):
                    await notifier.resolve(request, NotificationRef(entry["channel"], entry["ref"]))
            except NotifierError as exc:
                failure = str(exc)
                continue
            entry.update(state="resolved", at=format_time(now()))
            changed = True
    if not changed and not failure:
        return
    meta = obj["metadata"]
    current: Mapping[str, Any] = obj
    for _ in range(MAX_CONFLICTS):
        new_status = dict(current.get("status") or {})
        new_status["notifications"] = entries
        if failure:
            lifecycle.set_condition(
                new_status,
                "Notified",
                "False",
                "NotifierUnavailable",
                f"{notifier.name}: {failure}",
                now(),
            )
        elif phase is Phase.PENDING:
            lifecycle.set_condition(
                new_status, "Notified", "True", "Sent", f"notified via {notifier.name}", now()
            )
        try:
            await runtime.kube.patch_status(
                meta["namespace"], meta["name"], new_status, current["metadata"]["resourceVersion"]
            )
            break
        except Conflict:
            # What was sent is sent: record it on the fresh object. Raising for a retry here
            # would run this function again and post the same notification a second time.
            try:
                current = await runtime.kube.get(meta["namespace"], meta["name"])
            except NotFound:
                return
        except NotFound:
            return
    else:
        raise RetryLater("status kept changing while recording the notification", delay=0.5)
    if failure:
        raise RetryLater(f"notification via {notifier.name} failed: {failure}", delay=15.0)


async def _audit_notified(runtime: Runtime, obj: Mapping[str, Any], ref: NotificationRef) -> None:
    try:
        await runtime.audit.record(
            "notified",
            request=request_summary(obj),
            actor="greenlight",
            outcome="sent",
            details={"channel": ref.channel, "ref": ref.ref},
            event_id=f"{obj['metadata']['uid']}:notified",
        )
    except AuditWriteError as exc:
        metrics.AUDIT_WRITE_FAILURES.inc()
        _log.error("audit write failed for a notification", error=str(exc))


async def track_existing(runtime: Runtime, concurrency: int = 16) -> int:
    """At start, from one list call: arm the expiry of every pending request, and reconcile the
    requests nobody has handled or announced yet (created while the operator was down, or caught
    by a crash before their notification).

    kopf resumes objects one by one (tens per second); with thousands of requests, an expiry due
    meanwhile, or a new request, would otherwise wait for its object's turn. The resume handlers
    still visit every object afterwards; reconciling is idempotent, so visiting twice is harmless.
    """
    served = set(runtime.settings.namespaces)
    slots = asyncio.Semaphore(concurrency)
    fresh: list[Mapping[str, Any]] = []
    async for page in runtime.kube.pages():
        for obj in page:
            meta = obj.get("metadata") or {}
            if served and meta.get("namespace") not in served:
                continue
            status = obj.get("status") or {}
            if status.get("phase"):
                _track(runtime, obj)
            if not status.get("phase") or (
                status["phase"] == Phase.PENDING.value and not status.get("notifications")
            ):
                fresh.append(obj)  # not handled yet, or not announced yet

    async def handle(obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        async with slots:
            try:
                cause = "resume" if (obj.get("status") or {}).get("phase") else "create"
                await reconcile(runtime, meta["namespace"], meta["name"], obj, cause=cause)
            except RetryLater as exc:
                _log.warning("new request left to kopf's retry", name=meta["name"], error=str(exc))

    await asyncio.gather(*(handle(obj) for obj in fresh))
    return len(fresh)


def _track(runtime: Runtime, obj: Mapping[str, Any]) -> None:
    meta = obj["metadata"]
    status = obj.get("status") or {}
    uid = str(meta["uid"])
    runtime.decisions.locations[uid] = (str(meta["namespace"]), str(meta["name"]))
    if status.get("phase") == Phase.PENDING.value:
        runtime.pending.pending(uid, parse_time(meta["creationTimestamp"]))
        runtime.expiry.arm(
            parse_time(status["expiresAt"]), str(meta["namespace"]), str(meta["name"]), obj
        )
    else:
        runtime.pending.done(uid)
        runtime.expiry.forget(str(meta["namespace"]), str(meta["name"]))


@dataclass(order=True)
class _Alarm:
    at: float
    namespace: str = field(compare=False)
    name: str = field(compare=False)


class ExpiryClock:
    """One timer for every pending request: wakes at the earliest `expiresAt` and reconciles.

    Arming is idempotent (a request armed twice fires once per due time, and reconciling a
    request that is no longer pending is a no-op), so restarts simply re-arm everything.

    The clock keeps the body it was last armed with (compact JSON, without managedFields), so a
    due request is patched straight away: the status write carries that body's resourceVersion
    as a precondition, so a body that is no longer current costs a Conflict and a fresh read,
    never a wrong transition. A thousand requests expiring in one second then cost a thousand
    PATCHes instead of a thousand GETs and PATCHes.
    """

    def __init__(self, concurrency: int = 32) -> None:
        self._heap: list[_Alarm] = []
        self._armed: dict[tuple[str, str], float] = {}
        self._bodies: dict[tuple[str, str], str] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self.runtime: Runtime | None = None

    def arm(
        self, at: datetime, namespace: str, name: str, body: Mapping[str, Any] | None = None
    ) -> None:
        key, when = (namespace, name), at.timestamp()
        if body is not None:
            meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
            self._bodies[key] = json.dumps({**body, "metadata": meta}, separators=(",", ":"))
        if self._armed.get(key) == when:
            return
        self._armed[key] = when
        heapq.heappush(self._heap, _Alarm(when, namespace, name))
        self._wake.set()

    def forget(self, namespace: str, name: str) -> None:
        """The request is no longer pending: drop its body (its alarm, if any, is a no-op)."""
        self._bodies.pop((namespace, name), None)

    @property
    def armed(self) -> int:
        return len(self._armed)

    async def run(self, runtime: Runtime) -> None:
        tasks: set[asyncio.Task[None]] = set()
        while True:
            self._wake.clear()
            delay = self._heap[0].at - time.time() if self._heap else 3600.0
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue
            alarm = heapq.heappop(self._heap)
            key = (alarm.namespace, alarm.name)
            if self._armed.get(key) != alarm.at:
                continue
            del self._armed[key]
            await self._slots.acquire()
            task = asyncio.create_task(self._fire(runtime, alarm))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _fire(self, runtime: Runtime, alarm: _Alarm) -> None:
        try:
            await reconcile(runtime, alarm.namespace, alarm.name, None, cause="expiry")
        except RetryLater as exc:
            _log.warning(
                "expiry will be retried", namespace=alarm.namespace, name=alarm.name, error=str(exc)
            )
            self.arm(
                datetime.fromtimestamp(time.time() + exc.delay).astimezone(),
                alarm.namespace,
                alarm.name,
            )
        except Exception:
            _log.exception("expiry failed; retrying", namespace=alarm.namespace, name=alarm.name)
            self.arm(
                datetime.fromtimestamp(time.time() + 5).astimezone(), alarm.namespace, alarm.name
            )
        finally:
            self._slots.release()
