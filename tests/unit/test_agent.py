"""The agent SDK: workflow and task runs become metrics, log context and spans."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from greenlight import agent
from greenlight.agent import AGENT_REGISTRY, Status, Workflow
from greenlight.telemetry import logs

STATUSES = ("succeeded", "failed", "timed_out", "cancelled")


def value(name: str, **labels: str) -> float | None:
    return AGENT_REGISTRY.get_sample_value(name, labels)


def runs(workflow: str, status: str) -> float | None:
    return value("greenlight_workflow_runs_total", workflow=workflow, status=status)


def task_runs(workflow: str, task: str, status: str) -> float | None:
    return value("greenlight_task_runs_total", workflow=workflow, task=task, status=status)


def deadline(workflow: str, task: str, workflow_id: str, task_id: str) -> float | None:
    return value(
        "greenlight_task_deadline_timestamp_seconds",
        workflow=workflow,
        task=task,
        workflow_id=workflow_id,
        task_id=task_id,
    )


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans the SDK finishes, captured in memory from the process-wide provider."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    logs.configure("INFO", buffer)
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    structlog.reset_defaults()
    logging.captureWarnings(False)


def parsed(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_a_successful_run_counts_succeeded_and_observes_durations() -> None:
    with Workflow("wf-success") as wf:
        with wf.task("preview", timeout=60):
            assert value("greenlight_tasks_running", workflow="wf-success", task="preview") == 1.0
        with wf.task("apply"):
            pass

    assert runs("wf-success", "succeeded") == 1.0
    assert task_runs("wf-success", "preview", "succeeded") == 1.0
    assert task_runs("wf-success", "apply", "succeeded") == 1.0
    assert value("greenlight_tasks_running", workflow="wf-success", task="preview") == 0.0
    assert (
        value(
            "greenlight_workflow_duration_seconds_count", workflow="wf-success", status="succeeded"
        )
        == 1.0
    )
    duration = "greenlight_task_duration_seconds_count"
    assert value(duration, workflow="wf-success", task="apply", status="succeeded") == 1.0


def test_every_status_series_of_a_workflow_and_task_starts_at_zero() -> None:
    with Workflow("wf-zero") as wf, wf.task("only"):
        for status in STATUSES:
            assert runs("wf-zero", status) == 0.0
            assert task_runs("wf-zero", "only", status) == 0.0
        assert value("greenlight_workflows_awaiting_approval", workflow="wf-zero") == 0.0


def test_an_exception_counts_failed_and_is_reraised() -> None:
    def deploy() -> None:
        with Workflow("wf-fail") as wf, wf.task("destroy", timeout=60):
            raise RuntimeError("pulumi exited 255")

    with pytest.raises(RuntimeError, match="pulumi exited 255"):
        deploy()

    assert runs("wf-fail", "failed") == 1.0
    assert runs("wf-fail", "succeeded") == 0.0
    assert task_runs("wf-fail", "destroy", "failed") == 1.0
    assert value("greenlight_tasks_running", workflow="wf-fail", task="destroy") == 0.0


async def test_a_timeout_counts_timed_out() -> None:
    async def deploy() -> None:
        async with Workflow("wf-timeout") as wf, wf.task("preview", timeout=0.05):
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await deploy()

    assert runs("wf-timeout", "timed_out") == 1.0
    assert task_runs("wf-timeout", "preview", "timed_out") == 1.0


async def test_cancellation_counts_cancelled_and_propagates() -> None:
    started = asyncio.Event()

    async def orchestrate() -> None:
        async with Workflow("wf-cancel") as wf, wf.task("wait-for-ci", timeout=600):
            started.set()
            await asyncio.sleep(60)

    running = asyncio.create_task(orchestrate())
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    assert runs("wf-cancel", "cancelled") == 1.0
    assert task_runs("wf-cancel", "wait-for-ci", "cancelled") == 1.0
    assert value("greenlight_tasks_running", workflow="wf-cancel", task="wait-for-ci") == 0.0


def test_mark_records_a_status_for_a_block_that_ends_normally() -> None:
    with Workflow("wf-denied") as wf:
        wf.mark(Status.CANCELLED)

    assert runs("wf-denied", "cancelled") == 1.0
    assert runs("wf-denied", "succeeded") == 0.0


def test_the_deadline_series_exists_while_the_task_runs_and_is_removed_after() -> None:
    with Workflow("wf-deadline", workflow_id="wf-123") as wf:
        before = time.time()
        with wf.task("destroy", task_id="t-9", timeout=600):
            during = deadline("wf-deadline", "destroy", "wf-123", "t-9")
            assert during is not None
            assert before + 600 <= during <= time.time() + 600
        after = deadline("wf-deadline", "destroy", "wf-123", "t-9")

    assert after is None


def test_the_deadline_series_is_removed_when_the_task_fails_too() -> None:
    def deploy() -> None:
        with Workflow("wf-deadline-fail", "wf-1") as wf, wf.task("plan", task_id="t-1", timeout=30):
            raise ValueError("bad plan")

    with pytest.raises(ValueError, match="bad plan"):
        deploy()

    assert deadline("wf-deadline-fail", "plan", "wf-1", "t-1") is None


def test_a_task_without_timeout_has_no_deadline_series() -> None:
    with Workflow("wf-no-timeout", "wf-2") as wf, wf.task("lint", task_id="t-2"):
        names = {
            s.name
            for m in AGENT_REGISTRY.collect()
            for s in m.samples
            if s.labels.get("task_id") == "t-2"
        }

    assert names == set()


def test_the_deadline_is_served_on_metrics_only_while_running() -> None:
    server = agent.serve_metrics(0, "127.0.0.1")

    def scraped() -> list[dict[str, str]]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{server.port}/metrics", timeout=5
        ) as response:
            text = response.read().decode()
        return [
            s.labels
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "greenlight_task_deadline_timestamp_seconds"
            and s.labels["workflow_id"] == "wf-s"
        ]

    try:
        with Workflow("wf-served", "wf-s") as wf:
            with wf.task("apply", task_id="t-s", timeout=60):
                assert scraped() == [
                    {
                        "workflow": "wf-served",
                        "task": "apply",
                        "workflow_id": "wf-s",
                        "task_id": "t-s",
                    }
                ]
            assert scraped() == []
    finally:
        server()


def test_awaiting_approval_shows_in_the_gauge_only_during_the_wait() -> None:
    with Workflow("wf-approval") as wf:
        with wf.awaiting_approval(request="deploy-prod-1") as wait:
            assert value("greenlight_workflows_awaiting_approval", workflow="wf-approval") == 1.0
            wait.resolve("Approved")
        assert value("greenlight_workflows_awaiting_approval", workflow="wf-approval") == 0.0


async def test_awaiting_approval_works_with_async_with_and_ends_on_errors() -> None:
    during: list[float | None] = []

    async def deploy() -> None:
        async with Workflow("wf-approval-async") as wf, wf.awaiting_approval("deploy-prod-2"):
            during.append(
                value("greenlight_workflows_awaiting_approval", workflow="wf-approval-async")
            )
            raise TimeoutError

    with pytest.raises(TimeoutError):
        await deploy()

    assert during == [1.0]
    assert value("greenlight_workflows_awaiting_approval", workflow="wf-approval-async") == 0.0


def test_a_workflow_is_a_root_span_and_tasks_are_its_children(spans: InMemorySpanExporter) -> None:
    with Workflow("wf-spans", "wf-77") as wf:
        with wf.task("preview", task_id="t-1", timeout=60):
            pass
        with wf.awaiting_approval("deploy-prod-3") as wait:
            wait.resolve("Denied")
        wf.mark("cancelled")

    found = by_name(spans)
    root, task = found["workflow wf-spans"], found["task preview"]
    assert root.parent is None
    assert task.parent is not None
    assert task.parent.span_id == root.context.span_id
    assert task.context.trace_id == root.context.trace_id
    assert root.attributes is not None
    assert task.attributes is not None
    assert root.attributes["greenlight.workflow.id"] == "wf-77"
    assert root.attributes["greenlight.status"] == "cancelled"
    assert task.attributes["greenlight.task.id"] == "t-1"
    assert task.attributes["greenlight.task.timeout_seconds"] == 60.0
    events = {event.name: event.attributes for event in root.events}
    assert events["greenlight.approval.waiting"] == {"greenlight.approval.request": "deploy-prod-3"}
    resumed = events["greenlight.approval.resumed"]
    assert resumed is not None
    assert resumed["greenlight.approval.outcome"] == "Denied"


def test_a_failed_task_span_has_error_status_and_the_exception(spans: InMemorySpanExporter) -> None:
    with pytest.raises(KeyError), Workflow("wf-span-error") as wf, wf.task("lookup"):
        raise KeyError("stack")

    task = by_name(spans)["task lookup"]
    assert task.status.status_code is trace.StatusCode.ERROR
    assert [event.name for event in task.events] == ["exception"]


def test_a_workflow_continues_an_upstream_traceparent(spans: InMemorySpanExporter) -> None:
    upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    with Workflow("wf-continued", traceparent=upstream):
        pass

    root = by_name(spans)["workflow wf-continued"]
    assert f"{root.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert root.parent is not None
    assert f"{root.parent.span_id:016x}" == "b7ad6b7169203331"


def test_log_lines_inside_the_blocks_carry_workflow_and_task_ids(
    log_lines: io.StringIO, spans: InMemorySpanExporter
) -> None:
    log = structlog.stdlib.get_logger("orchestrator")
    with Workflow("wf-logs", "wf-9") as wf:
        log.info("planning")
        with wf.task("preview", task_id="t-3"):
            log.info("previewing")
        with wf.awaiting_approval("deploy-prod-4"):
            pass
    log.info("after")

    lines = parsed(log_lines)
    ours = {line["message"]: line for line in lines}
    assert (ours["planning"]["workflow_id"], ours["planning"]["task_id"]) == ("wf-9", "")
    assert (ours["previewing"]["workflow_id"], ours["previewing"]["task_id"]) == ("wf-9", "t-3")
    assert (ours["after"]["workflow_id"], ours["after"]["task_id"]) == ("", "")
    task_span = by_name(spans)["task preview"]
    assert ours["previewing"]["span_id"] == f"{task_span.context.span_id:016x}"
    assert ours["awaiting approval"]["approval_request"] == "deploy-prod-4"
    assert ours["task preview succeeded"]["status"] == "succeeded"
    assert ours["workflow wf-logs succeeded"]["workflow_id"] == "wf-9"


def test_a_failed_workflow_is_logged_as_an_error(log_lines: io.StringIO) -> None:
    with pytest.raises(OSError, match="disk full"), Workflow("wf-logged-failure"):
        raise OSError("disk full")

    [finished] = [
        line for line in parsed(log_lines) if line["message"] == "workflow wf-logged-failure failed"
    ]
    assert finished["level"] == "ERROR"
    assert finished["error"] == "OSError: disk full"


def test_decorated_functions_run_each_call_as_a_fresh_workflow_and_task() -> None:
    seen: list[tuple[str, str]] = []

    @agent.task("step", timeout=30)
    def step() -> str:
        workflow = agent.current_workflow()
        assert workflow is not None
        seen.append((workflow.workflow_id, workflow.name))
        return "done"

    @Workflow("wf-decorated")
    def orchestrate() -> str:
        return step()

    assert orchestrate() == "done"
    assert orchestrate() == "done"

    assert runs("wf-decorated", "succeeded") == 2.0
    assert task_runs("wf-decorated", "step", "succeeded") == 2.0
    assert len({workflow_id for workflow_id, _ in seen}) == 2


async def test_decorated_coroutines_are_instrumented_too() -> None:
    @agent.task("fetch")
    async def fetch() -> int:
        await asyncio.sleep(0)
        raise LookupError("no artifact")

    @Workflow("wf-decorated-async")
    async def orchestrate() -> int:
        return await fetch()

    with pytest.raises(LookupError):
        await orchestrate()

    assert runs("wf-decorated-async", "failed") == 1.0
    assert task_runs("wf-decorated-async", "fetch", "failed") == 1.0


def test_a_task_outside_any_workflow_is_refused_with_guidance() -> None:
    with pytest.raises(RuntimeError, match="outside a workflow"), agent.task("orphan"):
        pass


def test_a_workflow_object_cannot_be_entered_twice() -> None:
    wf = Workflow("wf-twice")
    with wf:
        pass

    with pytest.raises(RuntimeError, match="already started"), wf:
        pass


def test_a_non_positive_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout must be a positive"):
        agent.task("x", timeout=0)
