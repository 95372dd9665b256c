"""A workflow's trace, exported over real OTLP/HTTP, stays one trace across processes.

The orchestrator process runs an instrumented workflow and hands its `traceparent` on (as the
SDK puts it in the `greenlight.dev/traceparent` annotation); a second process continues that
trace the way the operator's create handler does, and links deferred work to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from tests.fakes.otlp import OtlpReceiver, ReceivedSpan, running_receiver

ORCHESTRATOR = """
    from greenlight.agent import Workflow
    from greenlight.telemetry import traces

    traces.configure("orchestrator")
    with Workflow("deploy", workflow_id="wf-1") as wf:
        with wf.task("preview", task_id="t-1", timeout=600):
            pass
        with wf.task("destroy", task_id="t-2", timeout=600):
            with wf.awaiting_approval(request="deploy-prod-x") as wait:
                print(traces.current_traceparent(), flush=True)
                wait.resolve("Approved")
    traces.shutdown()
"""

OPERATOR = """
    import sys
    from opentelemetry import trace
    from greenlight.telemetry import traces

    annotation = sys.argv[1]
    traces.configure("greenlight-operator")
    with traces.request_span("greenlight.request.create", annotation, deferred=False):
        with trace.get_tracer("test").start_as_current_span("greenlight.notify"):
            pass
    with traces.request_span("greenlight.request.decide", annotation, deferred=True):
        pass
    traces.shutdown()
"""


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with running_receiver() as started:
        yield started


def run(program: str, receiver: OtlpReceiver, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    finished = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout.strip()


def named(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.name: span for span in spans}


def test_workflow_and_task_spans_arrive_as_one_trace_with_the_workflow_as_root(
    receiver: OtlpReceiver,
) -> None:
    run(ORCHESTRATOR, receiver)

    spans = named(receiver.wait_for(lambda got: len(got) == 3))
    root, preview, destroy = spans["workflow deploy"], spans["task preview"], spans["task destroy"]
    assert root.parent_span_id == ""
    assert preview.parent_span_id == root.span_id
    assert destroy.parent_span_id == root.span_id
    assert {preview.trace_id, destroy.trace_id} == {root.trace_id}
    assert root.service_name == "orchestrator"
    assert root.attributes["greenlight.workflow.id"] == "wf-1"
    assert root.attributes["greenlight.status"] == "succeeded"
    assert destroy.attributes["greenlight.task.id"] == "t-2"
    assert destroy.events == ("greenlight.approval.waiting", "greenlight.approval.resumed")
    assert destroy.event_attributes[1]["greenlight.approval.outcome"] == "Approved"


def test_the_operator_continues_the_workflow_trace_and_links_deferred_work(
    receiver: OtlpReceiver,
) -> None:
    annotation = run(ORCHESTRATOR, receiver)
    run(OPERATOR, receiver, annotation)

    spans = named(receiver.wait_for(lambda got: len(got) == 6))
    destroy, notify = spans["task destroy"], spans["greenlight.notify"]
    create, decide = spans["greenlight.request.create"], spans["greenlight.request.decide"]
    assert create.service_name == "greenlight-operator"
    assert create.trace_id == destroy.trace_id
    assert create.parent_span_id == destroy.span_id
    assert notify.parent_span_id == create.span_id
    assert decide.trace_id != destroy.trace_id
    assert decide.parent_span_id == ""
    assert decide.links == ((destroy.trace_id, destroy.span_id),)
