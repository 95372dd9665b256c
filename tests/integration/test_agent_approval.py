"""An instrumented orchestrator pauses on a real ApprovalRequest and acts on the outcome.

The orchestrator (the requester service account) runs a `Workflow` that creates a request with
`ApprovalClient`, waits inside `awaiting_approval`, and then proceeds or stops; people decide
with `kubectl annotate` against the real API server, admission webhook and operator.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.support.kubectl import Kubectl
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.agent import AGENT_REGISTRY, Status, Workflow
from greenlight.client import ApprovalClient
from greenlight.core.model import ANN_TRACEPARENT, Phase
from greenlight.devcluster import ControlPlane


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
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
def client(control_plane: ControlPlane, people: People) -> Iterator[ApprovalClient]:
    """The orchestrator's client: it acts as the requester service account."""
    api = control_plane.api_client()
    api.set_default_header("Impersonate-User", people.orchestrator)
    yield ApprovalClient(namespace=people.namespace, api_client=api)
    api.close()


def sample(name: str, **labels: str) -> float | None:
    return AGENT_REGISTRY.get_sample_value(name, labels)


async def orchestrate(workflow: str, client: ApprovalClient, created: asyncio.Future[str]) -> Phase:
    """The orchestrator of docs/agent-sdk.md, reduced to its approval pause."""
    async with Workflow(workflow) as wf:
        async with wf.task("approval", timeout=120) as step:
            name = await client.async_create(
                action="pulumi destroy",
                target="production",
                workflow_id=wf.workflow_id,
                task_id=step.task_id,
                timeout="5m",
            )
            created.set_result(name)
            async with wf.awaiting_approval(request=name) as wait:
                outcome = await client.async_wait(name, limit=60)
                wait.resolve(outcome.phase)
        if outcome.phase is Phase.APPROVED:
            async with wf.task("destroy", timeout=60):
                await asyncio.sleep(0)
        else:
            wf.mark(Status.CANCELLED)
    return outcome.phase


async def decide(kubectl: Kubectl, namespace: str, name: str, user: str, *annotations: str) -> None:
    await asyncio.to_thread(
        kubectl, "-n", namespace, "annotate", f"apr/{name}", *annotations, as_user=user
    )


def by_name(spans: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans.get_finished_spans()}


async def test_an_approved_request_resumes_the_workflow_with_its_trace_on_the_request(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    client: ApprovalClient,
    spans: InMemorySpanExporter,
) -> None:
    created: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    run = asyncio.create_task(orchestrate("it-approved", client, created))
    name = await asyncio.wait_for(created, 30)

    assert sample("greenlight_workflows_awaiting_approval", workflow="it-approved") == 1.0
    request: dict[str, Any] = json.loads(
        (
            await asyncio.to_thread(
                kubectl, "-n", people.namespace, "get", f"apr/{name}", "-o", "json"
            )
        ).stdout
    )
    await decide(kubectl, people.namespace, name, people.alice, "greenlight.dev/decision=approve")
    phase = await asyncio.wait_for(run, 60)

    assert phase is Phase.APPROVED
    assert sample("greenlight_workflows_awaiting_approval", workflow="it-approved") == 0.0
    assert (
        sample("greenlight_workflow_runs_total", workflow="it-approved", status="succeeded") == 1.0
    )
    runs = "greenlight_task_runs_total"
    assert sample(runs, workflow="it-approved", task="destroy", status="succeeded") == 1.0
    task = by_name(spans)["task approval"]
    traceparent = request["metadata"]["annotations"][ANN_TRACEPARENT]
    assert traceparent.split("-")[1:3] == [
        f"{task.context.trace_id:032x}",
        f"{task.context.span_id:016x}",
    ]
    resumed = [event for event in task.events if event.name == "greenlight.approval.resumed"]
    assert resumed[0].attributes is not None
    assert resumed[0].attributes["greenlight.approval.outcome"] == "Approved"


async def test_a_denied_request_stops_the_workflow_as_cancelled_without_the_dangerous_task(
    operator: OperatorProcess, people: People, kubectl: Kubectl, client: ApprovalClient
) -> None:
    created: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    run = asyncio.create_task(orchestrate("it-denied", client, created))
    name = await asyncio.wait_for(created, 30)

    await decide(
        kubectl,
        people.namespace,
        name,
        people.bob,
        "greenlight.dev/decision=deny",
        "greenlight.dev/reason=not during the freeze",
    )
    phase = await asyncio.wait_for(run, 60)

    assert phase is Phase.DENIED
    assert sample("greenlight_workflow_runs_total", workflow="it-denied", status="cancelled") == 1.0
    assert sample("greenlight_workflow_runs_total", workflow="it-denied", status="succeeded") == 0.0
    assert (
        sample(
            "greenlight_task_runs_total", workflow="it-denied", task="destroy", status="succeeded"
        )
        is None
    )
    assert sample("greenlight_workflows_awaiting_approval", workflow="it-denied") == 0.0
