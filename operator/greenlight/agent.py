"""Instrumentation for the orchestrator's own process: workflows, tasks and approval pauses.

One block per unit of work records everything the dashboards and alerts need:

    with Workflow("deploy", workflow_id="wf-1") as wf:
        with wf.task("preview", timeout=600):
            ...
        with wf.awaiting_approval(request="deploy-prod-x7k2") as wait:
            outcome = client.wait(...)
            wait.resolve(outcome)

- metrics on `AGENT_REGISTRY` (serve them with `serve_metrics`): runs by status, durations,
  running tasks, awaiting-approval workflows, and a deadline gauge per running task that has a
  timeout (the only series carrying `workflow_id`/`task_id`; removed when the task ends);
- a trace per workflow: the workflow span is the root (or continues `traceparent`), each task
  is a child span; the approval pause is a pair of span events;
- log context: `workflow_id` and `task_id` are bound for every line logged inside the blocks.

Every block works with `with` and `async with`, and as a decorator (a fresh run per call).
The status is `succeeded` when the block ends normally, `failed` on an exception, `timed_out`
on `TimeoutError` (which is also `asyncio.TimeoutError`), `cancelled` on
`asyncio.CancelledError` (or `KeyboardInterrupt`); the exception is always re-raised. `mark()`
records another status for a block that ends normally (e.g. a denied approval).
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from greenlight.telemetry import spans
from greenlight.telemetry.exposition import ALL_INTERFACES, MetricsServer, Registry, serve
from greenlight.telemetry.traces import context_from_traceparent

__all__ = [
    "AGENT_REGISTRY",
    "ApprovalWait",
    "Status",
    "Task",
    "Workflow",
    "current_workflow",
    "serve_metrics",
    "task",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_log = logging.getLogger("greenlight.agent")
_tracer = trace.get_tracer("greenlight.agent")


class Status(enum.StrEnum):
    """How a workflow or task ended: the `status` label."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


AGENT_REGISTRY = Registry()

# Whole workflows, including time spent waiting for people: seconds to a day.
WORKFLOW_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
TASK_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)

WORKFLOW_RUNS = Counter(
    "greenlight_workflow_runs_total",
    "Workflow runs that ended, by status.",
    ["workflow", "status"],
    registry=AGENT_REGISTRY,
)
WORKFLOW_DURATION = Histogram(
    "greenlight_workflow_duration_seconds",
    "Duration of workflow runs, by status; exemplars carry the run's trace_id.",
    ["workflow", "status"],
    buckets=WORKFLOW_BUCKETS,
    registry=AGENT_REGISTRY,
)
TASK_RUNS = Counter(
    "greenlight_task_runs_total",
    "Task runs that ended, by status.",
    ["workflow", "task", "status"],
    registry=AGENT_REGISTRY,
)
TASK_DURATION = Histogram(
    "greenlight_task_duration_seconds",
    "Duration of task runs, by status; exemplars carry the run's trace_id.",
    ["workflow", "task", "status"],
    buckets=TASK_BUCKETS,
    registry=AGENT_REGISTRY,
)
TASKS_RUNNING = Gauge(
    "greenlight_tasks_running",
    "Tasks running now.",
    ["workflow", "task"],
    registry=AGENT_REGISTRY,
)
TASK_DEADLINE = Gauge(
    "greenlight_task_deadline_timestamp_seconds",
    "Unix time a running task must finish by; the series exists only while the task runs.",
    ["workflow", "task", "workflow_id", "task_id"],
    registry=AGENT_REGISTRY,
)
WORKFLOWS_AWAITING_APPROVAL = Gauge(
    "greenlight_workflows_awaiting_approval",
    "Workflow runs waiting for a human decision on an ApprovalRequest now.",
    ["workflow"],
    registry=AGENT_REGISTRY,
)

_current: ContextVar[Workflow | None] = ContextVar("greenlight_workflow", default=None)


def serve_metrics(port: int, host: str = ALL_INTERFACES) -> MetricsServer:
    """Serve the agent metrics at /metrics (scrape job `greenlight-agent`); call to stop."""
    return serve(AGENT_REGISTRY, port, host)


def current_workflow() -> Workflow | None:
    """The workflow whose block the caller is in, if any."""
    return _current.get()


def _status_for(error: BaseException | None) -> Status:
    if error is None:
        return Status.SUCCEEDED
    if isinstance(error, TimeoutError):
        return Status.TIMED_OUT
    if isinstance(error, Exception):
        return Status.FAILED
    return Status.CANCELLED


def _exemplar(span: trace.Span) -> dict[str, str] | None:
    span_context = span.get_span_context()
    return (
        {"trace_id": trace.format_trace_id(span_context.trace_id)}
        if span_context.is_valid
        else None
    )


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class _Run:
    """A block of work that is a context manager (sync and async) and a decorator.

    Subclasses say what happens at the start and at the end; this class keeps the span,
    the log context and the status bookkeeping in one place.
    """

    def __init__(self) -> None:
        self._span: trace.Span | None = None
        self._span_token: Token[otel_context.Context] | None = None
        self._log_tokens: dict[str, Token[Any]] = {}
        self._marked: Status | None = None
        self._started = 0.0

    def _fresh(self) -> _Run:
        raise NotImplementedError

    def _begin(self) -> None:
        raise NotImplementedError

    def _end(self, status: Status, seconds: float, error: BaseException | None) -> None:
        raise NotImplementedError

    def mark(self, status: Status | str) -> None:
        """Record `status` instead of `succeeded` when the block ends without an exception."""
        self._marked = Status(status)

    @property
    def span(self) -> trace.Span:
        """The span of this run (a non-recording span before the block starts)."""
        return self._span or trace.INVALID_SPAN

    def _open_span(self, name: str, parent: otel_context.Context, attrs: dict[str, Any]) -> None:
        self._span = _tracer.start_span(name, context=parent, attributes=attrs)
        self._span_token = otel_context.attach(trace.set_span_in_context(self._span))

    def _bind_log(self, **context: Any) -> None:
        self._log_tokens = dict(structlog.contextvars.bind_contextvars(**context))

    def __enter__(self) -> Any:
        if self._span is not None:
            raise RuntimeError(f"{self!r} was already started; create a new one per run")
        self._started = time.monotonic()
        self._begin()
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        status = _status_for(error) if error is not None else (self._marked or Status.SUCCEEDED)
        span = self.span
        span.set_attribute(spans.ATTR_STATUS, status.value)
        if error is not None and status in (Status.FAILED, Status.TIMED_OUT):
            span.record_exception(error)
        if status in (Status.FAILED, Status.TIMED_OUT):
            description = f"{type(error).__name__}: {error}" if error is not None else status.value
            span.set_status(trace.Status(trace.StatusCode.ERROR, description))
        try:
            self._end(status, time.monotonic() - self._started, error)
        finally:
            span.end()
            if self._span_token is not None:
                otel_context.detach(self._span_token)
            structlog.contextvars.reset_contextvars(**self._log_tokens)

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(error_type, error, traceback)

    def __call__(self, function: Callable[_P, _R]) -> Callable[_P, _R]:
        """Decorate a function (sync or async): every call runs in a fresh copy of this block."""
        if inspect.iscoroutinefunction(function):
            coroutine_function = cast(Callable[_P, Awaitable[Any]], function)

            @functools.wraps(function)
            async def run_async(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                async with self._fresh():
                    return await coroutine_function(*args, **kwargs)

            return cast(Callable[_P, _R], run_async)

        @functools.wraps(function)
        def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with self._fresh():
                return function(*args, **kwargs)

        return run


class Workflow(_Run):
    """One run of a workflow: the root span, `workflow_id` in the logs, runs by status.

    `name` is a label value, so it must be a fixed name ("deploy"), never an id.
    `workflow_id` identifies this run (generated when omitted). `traceparent` continues an
    upstream trace (e.g. the CI job's) instead of starting a new one.
    """

    def __init__(
        self, name: str, workflow_id: str | None = None, *, traceparent: str | None = None
    ) -> None:
        super().__init__()
        self.name = name
        self.workflow_id = workflow_id or _new_id("wf")
        self._explicit_id = workflow_id
        self._traceparent = traceparent
        self._current_token: Token[Workflow | None] | None = None

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, workflow_id={self.workflow_id!r})"

    def __enter__(self) -> Workflow:
        return cast(Workflow, super().__enter__())

    async def __aenter__(self) -> Workflow:
        return self.__enter__()

    def _fresh(self) -> Workflow:
        return Workflow(self.name, self._explicit_id, traceparent=self._traceparent)

    def _begin(self) -> None:
        for status in Status:
            WORKFLOW_RUNS.labels(self.name, status.value)
            WORKFLOW_DURATION.labels(self.name, status.value)
        WORKFLOWS_AWAITING_APPROVAL.labels(self.name)
        self._open_span(
            spans.WORKFLOW_PREFIX + self.name,
            context_from_traceparent(self._traceparent),
            {spans.ATTR_WORKFLOW_NAME: self.name, spans.ATTR_WORKFLOW_ID: self.workflow_id},
        )
        self._bind_log(workflow_id=self.workflow_id, task_id="", workflow=self.name)
        self._current_token = _current.set(self)
        _log.info("workflow %s started", self.name)

    def _end(self, status: Status, seconds: float, error: BaseException | None) -> None:
        if self._current_token is not None:
            _current.reset(self._current_token)
        WORKFLOW_RUNS.labels(self.name, status.value).inc()
        WORKFLOW_DURATION.labels(self.name, status.value).observe(seconds, _exemplar(self.span))
        _log.log(
            _LOG_LEVEL[status],
            "workflow %s %s",
            self.name,
            status.value,
            extra={"status": status.value, "duration_seconds": round(seconds, 3)}
            | ({"error": f"{type(error).__name__}: {error}"} if error is not None else {}),
        )

    def task(self, name: str, task_id: str | None = None, *, timeout: float | None = None) -> Task:
        """A task of this workflow (see `Task`)."""
        return Task(name, task_id, timeout=timeout, workflow=self)

    def awaiting_approval(self, request: str = "") -> ApprovalWait:
        """A block during which this workflow waits for a decision on ApprovalRequest `request`."""
        return ApprovalWait(self, request)


class Task(_Run):
    """One run of a task inside a workflow: a child span, `task_id` in the logs, runs by status.

    `timeout` (seconds) sets the deadline gauge while the task runs, which is what the
    "task stuck past its timeout" alert compares with the clock; the SDK does not enforce it
    (wrap the work in `asyncio.timeout(...)` to do so; a TimeoutError ends it as `timed_out`).
    Without `workflow`, the task belongs to the workflow whose block it runs in.
    """

    def __init__(
        self,
        name: str,
        task_id: str | None = None,
        *,
        timeout: float | None = None,
        workflow: Workflow | None = None,
    ) -> None:
        super().__init__()
        if timeout is not None and timeout <= 0:
            raise ValueError(f"task {name!r}: timeout must be a positive number of seconds")
        self.name = name
        self.task_id = task_id or _new_id(name)
        self.timeout = timeout
        self._explicit_id = task_id
        self._workflow = workflow
        self._deadline_labels: tuple[str, str, str, str] | None = None

    def __repr__(self) -> str:
        return f"Task({self.name!r}, task_id={self.task_id!r})"

    def __enter__(self) -> Task:
        return cast(Task, super().__enter__())

    async def __aenter__(self) -> Task:
        return self.__enter__()

    @property
    def workflow(self) -> Workflow:
        """The workflow this task belongs to."""
        workflow = self._workflow or current_workflow()
        if workflow is None:
            raise RuntimeError(
                f"task {self.name!r} runs outside a workflow: start it inside `with Workflow(...)`"
                " or create it with workflow.task(...)"
            )
        return workflow

    def _fresh(self) -> Task:
        return Task(self.name, self._explicit_id, timeout=self.timeout, workflow=self._workflow)

    def _begin(self) -> None:
        workflow = self.workflow
        self._workflow = workflow
        for status in Status:
            TASK_RUNS.labels(workflow.name, self.name, status.value)
            TASK_DURATION.labels(workflow.name, self.name, status.value)
        TASKS_RUNNING.labels(workflow.name, self.name).inc()
        attrs: dict[str, Any] = {
            spans.ATTR_WORKFLOW_NAME: workflow.name,
            spans.ATTR_WORKFLOW_ID: workflow.workflow_id,
            spans.ATTR_TASK_NAME: self.name,
            spans.ATTR_TASK_ID: self.task_id,
        }
        if self.timeout is not None:
            attrs[spans.ATTR_TASK_TIMEOUT] = float(self.timeout)
            self._deadline_labels = (workflow.name, self.name, workflow.workflow_id, self.task_id)
            TASK_DEADLINE.labels(*self._deadline_labels).set(time.time() + self.timeout)
        current = trace.get_current_span().get_span_context()
        in_workflow = (
            current.is_valid and current.trace_id == workflow.span.get_span_context().trace_id
        )
        parent = (
            otel_context.get_current()
            if in_workflow
            else trace.set_span_in_context(workflow.span, otel_context.Context())
        )
        self._open_span(spans.TASK_PREFIX + self.name, parent, attrs)
        self._bind_log(workflow_id=workflow.workflow_id, task_id=self.task_id, task=self.name)
        _log.info("task %s started", self.name, extra={"timeout_seconds": self.timeout})

    def _end(self, status: Status, seconds: float, error: BaseException | None) -> None:
        workflow = self.workflow
        if self._deadline_labels is not None:
            TASK_DEADLINE.remove(*self._deadline_labels)
        TASKS_RUNNING.labels(workflow.name, self.name).dec()
        TASK_RUNS.labels(workflow.name, self.name, status.value).inc()
        TASK_DURATION.labels(workflow.name, self.name, status.value).observe(
            seconds, _exemplar(self.span)
        )
        _log.log(
            _LOG_LEVEL[status],
            "task %s %s",
            self.name,
            status.value,
            extra={"status": status.value, "duration_seconds": round(seconds, 3)}
            | ({"error": f"{type(error).__name__}: {error}"} if error is not None else {}),
        )


def task(name: str, task_id: str | None = None, *, timeout: float | None = None) -> Task:
    """A task of the current workflow; as a decorator, each call is a fresh task run."""
    return Task(name, task_id, timeout=timeout)


class ApprovalWait:
    """The pause while a workflow waits for people to decide on an ApprovalRequest.

    While the block runs, `greenlight_workflows_awaiting_approval{workflow}` counts it, the
    current span has a `greenlight.approval.waiting` event, and a log line says so; at the end
    a `greenlight.approval.resumed` event and a log line carry the outcome given to `resolve`.
    """

    def __init__(self, workflow: Workflow, request: str) -> None:
        self.workflow = workflow
        self.request = request
        self.outcome = ""
        self._started = 0.0

    def resolve(self, outcome: str) -> None:
        """Record the request's outcome (Approved, Denied, Expired, Cancelled)."""
        self.outcome = str(outcome)

    def __enter__(self) -> ApprovalWait:
        self._started = time.monotonic()
        WORKFLOWS_AWAITING_APPROVAL.labels(self.workflow.name).inc()
        trace.get_current_span().add_event(
            spans.EVENT_APPROVAL_WAITING, {spans.ATTR_APPROVAL_REQUEST: self.request}
        )
        _log.info("awaiting approval", extra={"approval_request": self.request})
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        waited = time.monotonic() - self._started
        WORKFLOWS_AWAITING_APPROVAL.labels(self.workflow.name).dec()
        outcome = self.outcome or ("" if error is None else _status_for(error).value)
        trace.get_current_span().add_event(
            spans.EVENT_APPROVAL_RESUMED,
            {
                spans.ATTR_APPROVAL_REQUEST: self.request,
                spans.ATTR_APPROVAL_OUTCOME: outcome,
                spans.ATTR_APPROVAL_WAITED: waited,
            },
        )
        _log.info(
            "approval wait ended",
            extra={
                "approval_request": self.request,
                "approval_outcome": outcome,
                "waited_seconds": round(waited, 3),
            },
        )

    async def __aenter__(self) -> ApprovalWait:
        return self.__enter__()

    async def __aexit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(error_type, error, traceback)


_LOG_LEVEL = {
    Status.SUCCEEDED: logging.INFO,
    Status.CANCELLED: logging.WARNING,
    Status.FAILED: logging.ERROR,
    Status.TIMED_OUT: logging.ERROR,
}
