"""Trace context across process boundaries, and OTLP export that never gets in the way."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.fakes.otlp import OtlpReceiver, running_receiver

from greenlight.telemetry import traces

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with running_receiver() as started:
        yield started


@pytest.fixture
def tracer() -> trace.Tracer:
    """A tracer of a private provider: spans are real but nothing is exported."""
    return TracerProvider().get_tracer("test")


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans finished through the process-wide provider, captured in memory."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()


def run_python(
    program: str, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program)],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_there_is_no_traceparent_outside_a_span() -> None:
    assert traces.current_traceparent() is None


def test_traceparent_names_the_current_span(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("work") as span:
        traceparent = traces.current_traceparent()
    context = span.get_span_context()

    assert traceparent is not None
    match = TRACEPARENT.match(traceparent)
    assert match is not None
    assert match.groups() == (f"{context.trace_id:032x}", f"{context.span_id:016x}")


def test_a_span_started_from_a_traceparent_continues_that_trace(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("orchestrator") as upstream:
        traceparent = traces.current_traceparent()

    with tracer.start_as_current_span(
        "greenlight.request.create", context=traces.context_from_traceparent(traceparent)
    ) as continued:
        pass

    assert continued.get_span_context().trace_id == upstream.get_span_context().trace_id
    parent = getattr(continued, "parent", None)
    assert parent is not None
    assert parent.span_id == upstream.get_span_context().span_id


def test_deferred_work_starts_a_new_trace_linked_to_the_request(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("orchestrator") as upstream:
        traceparent = traces.current_traceparent()

    with tracer.start_as_current_span(
        "greenlight.request.expire",
        context=traces.context_from_traceparent(None),
        links=traces.link_from_traceparent(traceparent),
    ) as deferred:
        pass

    assert deferred.get_span_context().trace_id != upstream.get_span_context().trace_id
    [link] = list(getattr(deferred, "links", ()))
    assert link.context.span_id == upstream.get_span_context().span_id
    assert traces.trace_id_of(traceparent) == f"{upstream.get_span_context().trace_id:032x}"


@pytest.mark.parametrize(
    "bad", [None, "", "not-a-traceparent", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"]
)
def test_a_missing_or_invalid_traceparent_gives_a_root_context_and_no_links(
    tracer: trace.Tracer, bad: str | None
) -> None:
    with tracer.start_as_current_span("root", context=traces.context_from_traceparent(bad)) as span:
        pass

    assert getattr(span, "parent", "missing") is None
    assert traces.link_from_traceparent(bad) == []
    assert traces.trace_id_of(bad) is None


def test_request_span_continues_the_orchestrator_trace_for_immediate_work(
    tracer: trace.Tracer, exported: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("task destroy") as upstream:
        traceparent = traces.current_traceparent()

    with traces.request_span("greenlight.request.create", traceparent, deferred=False):
        pass

    [create] = exported.get_finished_spans()
    assert create.context.trace_id == upstream.get_span_context().trace_id
    assert create.parent is not None
    assert create.parent.span_id == upstream.get_span_context().span_id


def test_request_span_for_deferred_work_is_a_linked_root_that_records_failures(
    tracer: trace.Tracer, exported: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("task destroy") as upstream:
        traceparent = traces.current_traceparent()

    with (
        pytest.raises(RuntimeError, match="audit"),
        traces.request_span(
            "greenlight.request.expire",
            traceparent,
            deferred=True,
            attributes={"greenlight.request.name": "apr-1"},
        ),
    ):
        raise RuntimeError("audit write failed")

    [expire] = exported.get_finished_spans()
    assert expire.parent is None
    assert [link.context.span_id for link in expire.links] == [upstream.get_span_context().span_id]
    assert expire.status.status_code is trace.StatusCode.ERROR
    assert expire.attributes == {"greenlight.request.name": "apr-1"}


EXPORTING_PROGRAM = """
    from opentelemetry import trace
    from greenlight.telemetry import traces

    traces.configure("greenlight-operator")
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("greenlight.request.create") as parent:
        with tracer.start_as_current_span("greenlight.notify"):
            pass
    traces.shutdown()
"""


def test_spans_are_exported_over_otlp_http_to_the_configured_endpoint(
    receiver: OtlpReceiver,
) -> None:
    finished = run_python(EXPORTING_PROGRAM, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})

    assert finished.returncode == 0, finished.stderr
    spans = {span.name: span for span in receiver.wait_for(lambda got: len(got) == 2)}
    create, notify = spans["greenlight.request.create"], spans["greenlight.notify"]
    assert notify.parent_span_id == create.span_id
    assert notify.trace_id == create.trace_id
    assert create.parent_span_id == ""
    assert create.service_name == "greenlight-operator"


def test_otel_service_name_overrides_the_default_service_name(receiver: OtlpReceiver) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "operator-canary"}

    finished = run_python(EXPORTING_PROGRAM, env)

    assert finished.returncode == 0, finished.stderr
    assert {span.service_name for span in receiver.wait_for(lambda got: len(got) == 2)} == {
        "operator-canary"
    }


def test_traces_exporter_none_exports_nothing_even_with_an_endpoint(receiver: OtlpReceiver) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_TRACES_EXPORTER": "none"}

    finished = run_python(EXPORTING_PROGRAM, env)

    assert finished.returncode == 0, finished.stderr
    assert receiver.requests == 0


def test_without_otel_configuration_nothing_is_exported_and_nothing_complains() -> None:
    finished = run_python(EXPORTING_PROGRAM, {})

    assert finished.returncode == 0
    assert finished.stderr == ""


def test_an_unreachable_collector_neither_fails_nor_blocks_the_process() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    program = """
        import time
        from opentelemetry import trace
        from greenlight.telemetry import traces

        traces.configure("greenlight-operator")
        tracer = trace.get_tracer("test")
        started = time.monotonic()
        for _ in range(200):
            with tracer.start_as_current_span("greenlight.request.create"):
                pass
        assert time.monotonic() - started < 1.0, "creating spans was slowed by the exporter"
        traces.shutdown(timeout_seconds=2.0)
    """
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
    }

    started = time.monotonic()
    finished = run_python(program, env)

    assert finished.returncode == 0, finished.stderr
    assert time.monotonic() - started < 10.0


def test_without_export_request_spans_still_carry_the_trace_ids_logs_use() -> None:
    """Configured with nothing to export to, request spans record nothing, yet the current
    span inside one has the orchestrator's trace id (immediate work) or a new valid one
    (deferred work), so logs and exemplars still name a trace."""
    program = """
        from opentelemetry import trace
        from greenlight.telemetry import traces

        traces.configure("greenlight-operator")
        upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with traces.request_span("greenlight.request.create", upstream, deferred=False) as span:
            inside = trace.get_current_span()
            assert inside is span and not span.is_recording()
            assert traces.current_traceparent().split("-")[1] == upstream.split("-")[1]
            assert traces.current_traceparent().split("-")[2] != upstream.split("-")[2]
        seen = set()
        for _ in range(3):
            with traces.request_span("greenlight.request.expire", upstream, deferred=True):
                context = trace.get_current_span().get_span_context()
                assert context.is_valid
                seen.add(format(context.trace_id, "032x"))
        assert len(seen) == 3 and upstream.split("-")[1] not in seen, seen
        assert not trace.get_current_span().get_span_context().is_valid
        print("ok")
    """

    finished = run_python(program, {})

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "ok"
