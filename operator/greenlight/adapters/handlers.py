"""The kopf handlers: thin. Each one hands the object to the reconciler and maps its failures
onto kopf's retry mechanism."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import structlog
from opentelemetry import trace

from greenlight.adapters import reconciler
from greenlight.adapters.runtime import Runtime
from greenlight.core.model import ANN_TRACEPARENT, GROUP, PLURAL, VERSION
from greenlight.telemetry import logs, traces

_log = structlog.get_logger("greenlight.handlers")


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile_request(
    body: kopf.Body,
    namespace: str | None,
    name: str | None,
    memo: kopf.Memo,
    reason: str,
    **_: Any,
) -> None:
    """Creation, a decision annotation, or a restart: bring the status up to date."""
    runtime: Runtime = memo["runtime"]
    spec = body.get("spec") or {}
    requester = spec.get("requester") or {}
    annotations = body.get("metadata", {}).get("annotations") or {}
    traceparent = annotations.get(ANN_TRACEPARENT)
    span_name = (
        "greenlight.request.create" if reason == "create" else "greenlight.request.reconcile"
    )
    tracer = trace.get_tracer("greenlight.operator")
    # Creation continues the orchestrator's trace; later work starts a new trace linked to it.
    if reason == "create":
        span = tracer.start_as_current_span(
            span_name, context=traces.context_from_traceparent(traceparent)
        )
    else:
        span = tracer.start_as_current_span(
            span_name, links=traces.link_from_traceparent(traceparent)
        )
    with (
        span,
        logs.bind_request(
            str(requester.get("workflowId", "")),
            str(requester.get("taskId", "")),
            namespace=namespace,
            name=name,
        ),
    ):
        try:
            await reconciler.reconcile(runtime, str(namespace), str(name), _plain(body))
        except reconciler.RetryLater as exc:
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc


def _plain(body: kopf.Body) -> dict[str, Any]:
    """A mutable deep copy of kopf's read-only body view."""
    return copy.deepcopy(dict(body))
