"""OpenTelemetry tracing: one provider per process, exported over OTLP/HTTP, configured by `OTEL_*`.

Export is decided by the standard environment variables only:

- `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: spans are created (so logs and
  exemplars still carry trace ids and `traceparent` still propagates) but never exported.
- `OTEL_TRACES_EXPORTER=otlp`, or any of `OTEL_EXPORTER_OTLP_ENDPOINT` /
  `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set: a `BatchSpanProcessor` with the OTLP/HTTP exporter,
  which reads its endpoint, headers, timeout, compression and TLS settings from `OTEL_*` itself.
- nothing set: no export. A process that was not told where a collector is does not guess,
  so it does not fill its log with connection errors.

The exporter works in a background thread: an unreachable collector costs dropped spans and
a log line, never a blocked or failed handler. `shutdown()` is bounded in time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from greenlight.config import TraceSettings

_log = logging.getLogger(__name__)
_PROPAGATOR = TraceContextTextMapPropagator()
_IDS = RandomIdGenerator()
_TRACEPARENT = "traceparent"


class _State:
    """What `configure` set up, so `shutdown` can flush it and a second call reuses it."""

    provider: TracerProvider | None = None
    exporter: SpanExporter | None = None


def _exporter_wanted(settings: TraceSettings) -> bool:
    if settings.sdk_disabled.strip().lower() == "true":
        return False
    names = {n.strip().lower() for n in settings.traces_exporter.split(",") if n.strip()}
    if names:
        if names - {"otlp", "none"}:
            _log.warning(
                "OTEL_TRACES_EXPORTER=%s: only 'otlp' and 'none' are supported",
                settings.traces_exporter,
            )
        return "otlp" in names
    return bool(settings.exporter_otlp_endpoint or settings.exporter_otlp_traces_endpoint)


def configure(service_name: str) -> TracerProvider:
    """Install the process-wide tracer provider (once; later calls return the same one).

    `service_name` is used unless `OTEL_SERVICE_NAME` is set; `OTEL_RESOURCE_ATTRIBUTES` and
    `OTEL_TRACES_SAMPLER` are honoured as usual.
    """
    if _State.provider is not None:
        return _State.provider
    settings = TraceSettings()
    attributes = {} if settings.service_name else {"service.name": service_name}
    wanted = _exporter_wanted(settings)
    # With nothing to export to, spans are not recorded (ids and context still propagate, so
    # logs and exemplars keep their trace ids): recording them cost about a tenth of the
    # operator's CPU per request for spans nobody could see (docs/benchmarks.md).
    provider = TracerProvider(
        resource=Resource.create(attributes), sampler=None if wanted else ALWAYS_OFF
    )
    if wanted:
        # Imported only here: the exporter brings protobuf and requests (4 MiB resident).
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
        _State.exporter = exporter
    trace.set_tracer_provider(provider)
    _State.provider = provider
    return provider


def shutdown(timeout_seconds: float = 5.0) -> None:
    """Export what is buffered, waiting at most `timeout_seconds`, then stop exporting.

    When the collector cannot be reached the exporter would retry for up to its own timeout;
    past our deadline the retries are abandoned, so process exit is never held up.
    """
    provider, exporter = _State.provider, _State.exporter
    if provider is None:
        return
    worker = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    worker.start()
    worker.join(timeout_seconds)
    if worker.is_alive() and exporter is not None:
        exporter.shutdown()
        worker.join(1.0)
    _State.provider = None
    _State.exporter = None


def exporting() -> bool:
    """Whether spans are recorded and exported (an exporter is configured)."""
    return _State.exporter is not None


def child_span(
    tracer: trace.Tracer,
    name: str,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> AbstractContextManager[object]:
    """A span around one step of a traced operation, only when spans are exported.

    Without an exporter no span is recorded anyway (sampler `ALWAYS_OFF`); the step then runs
    in its caller's span, whose trace id the logs and exemplars still carry, and the
    per-call cost of opening a non-recording span is saved."""
    if _State.exporter is None:
        return nullcontext()
    return tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, or None when no span is recording."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(_TRACEPARENT)


def context_from_traceparent(traceparent: str | None) -> otel_context.Context:
    """A context whose parent is the span named by `traceparent` (empty when absent/invalid).

    Use it to continue a trace across a process boundary:
    `tracer.start_as_current_span(name, context=context_from_traceparent(tp))`.
    """
    if not traceparent:
        return otel_context.Context()
    return _PROPAGATOR.extract({_TRACEPARENT: traceparent}, context=otel_context.Context())


def link_from_traceparent(traceparent: str | None) -> list[trace.Link]:
    """Links to the span named by `traceparent`, for work done later on its behalf.

    A decision hours after creation, or an expiry, starts a new trace and links it to the
    request's trace instead of making a days-long parent span. Empty when absent/invalid.
    """
    span_context = trace.get_current_span(context_from_traceparent(traceparent)).get_span_context()
    return [trace.Link(span_context)] if span_context.is_valid else []


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex-digit trace id in `traceparent` (for exemplars), or None when invalid."""
    span_context = trace.get_current_span(context_from_traceparent(traceparent)).get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


@contextmanager
def request_span(
    name: str,
    traceparent: str | None,
    *,
    deferred: bool,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[trace.Span]:
    """The current span for operator work on one ApprovalRequest.

    Work done right away (`deferred=False`, the create handler) becomes a child of the
    orchestrator's span named by `traceparent`, so the request shows in the workflow's trace.
    Work done later (`deferred=True`: a decision, an expiry, a cancel) starts a new trace linked
    to it. An exception escaping the block is recorded on the span and re-raised.
    """
    if _State.provider is not None and not exporting():
        # Configured, with nothing to export to: the span the SDK would make (sampler
        # ALWAYS_OFF), a non-recording span with the parent's trace id or a new one, without
        # the SDK's per-span work (links, attributes, sampling), about 8 % of an expiry.
        with trace.use_span(
            _unrecorded(None if deferred else traceparent), end_on_exit=False
        ) as span:
            yield span
        return
    if deferred:
        parent, links = otel_context.Context(), link_from_traceparent(traceparent)
    else:
        parent, links = context_from_traceparent(traceparent), []
    tracer = trace.get_tracer("greenlight.operator")
    with tracer.start_as_current_span(
        name, context=parent, links=links, attributes=attributes
    ) as span:
        yield span


def _unrecorded(traceparent: str | None) -> trace.Span:
    """A non-recording span: a child of `traceparent` (in its trace) or, without one, the root
    of a new trace; its ids come from the SDK's generator."""
    parent = trace.get_current_span(context_from_traceparent(traceparent)).get_span_context()
    trace_id = parent.trace_id if parent.is_valid else _IDS.generate_trace_id()
    return trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id,
            _IDS.generate_span_id(),
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
            trace_state=parent.trace_state if parent.is_valid else None,
        )
    )


def record_span(
    name: str,
    traceparent: str | None,
    start: datetime,
    end: datetime,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> None:
    """A finished span for something that happened between `start` and `end` elsewhere (the
    approved command, run by `greenlight exec`), a child of the request's trace."""
    tracer = trace.get_tracer("greenlight.operator")
    span = tracer.start_span(
        name,
        context=context_from_traceparent(traceparent),
        attributes=attributes,
        start_time=int(start.timestamp() * 1e9),
    )
    span.end(end_time=int(end.timestamp() * 1e9))
