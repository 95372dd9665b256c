"""Telemetry end to end (docs/telemetry.md): metrics, logs and traces of the operator process.

The orchestrator (this test process) runs an instrumented workflow with its own tracer provider
and creates a request through the SDK; the operator (another process, Slack in HTTP mode,
logging at DEBUG) exports its spans over OTLP/HTTP to a real receiver that decodes them. The
trace must cross the process boundary through the `greenlight.dev/traceparent` annotation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from tests.fakes.otlp import OtlpReceiver, ReceivedSpan, running_receiver
from tests.support.approvals import Requests
from tests.support.kubectl import Kubectl
from tests.support.manifests import poll
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People
from tests.support.scrape import exemplars, scrape
from tests.support.slack_deployment import (
    APPROVE_ACTION_ID,
    SLACK_ID,
    SlackDeployment,
    slack_deployment,
    stop_shared_operator,
)

from greenlight.agent import Workflow
from greenlight.client import ApprovalClient
from greenlight.devcluster import ControlPlane
from greenlight.telemetry import metrics, spans

OPERATOR_SERVICE = "greenlight-operator"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with running_receiver() as started:
        yield started


@pytest.fixture(scope="module")
def traced(
    control_plane: ControlPlane,
    operator_process: OperatorProcess,
    receiver: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SlackDeployment]:
    """The operator exporting spans to `receiver`, logging everything (DEBUG) it can."""
    stop_shared_operator(operator_process)
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "GREENLIGHT_LOG_LEVEL": "DEBUG",
    }
    workdir = tmp_path_factory.mktemp("operator-traced")
    with slack_deployment(control_plane, workdir, "http", env=env) as deployment:
        yield deployment
    deployment.log_records()


class _ExportWhileTesting(SimpleSpanProcessor):
    """Exports while the test runs; a provider cannot drop a processor, so it goes quiet after."""

    active = True

    def on_end(self, span: ReadableSpan) -> None:
        if self.active:
            super().on_end(span)


@pytest.fixture
def orchestrator_spans(receiver: OtlpReceiver) -> Iterator[None]:
    """This process's own tracer provider exports the SDK's spans to the same receiver."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": "orchestrator"}))
        trace.set_tracer_provider(provider)
    processor = _ExportWhileTesting(OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces"))
    provider.add_span_processor(processor)
    yield
    processor.active = False  # the provider shuts it down with the process


@pytest.fixture
def orchestrator(control_plane: ControlPlane, people: People) -> Iterator[ApprovalClient]:
    """The SDK client, authenticated as the requester service account."""
    api = control_plane.api_client()
    api.set_default_header("Impersonate-User", people.orchestrator)
    yield ApprovalClient(namespace=people.namespace, api_client=api)
    api.close()


def one(found: list[ReceivedSpan], what: str) -> ReceivedSpan:
    assert len(found) == 1, f"expected one {what}, got {found}"
    return found[0]


def test_every_labelled_series_exists_from_start(traced: SlackDeployment) -> None:
    scraped = scrape(traced.operator.metrics_port)
    for outcome in metrics.OUTCOMES:
        for via in metrics.VIAS:
            assert scraped.has("greenlight_requests_decided_total", outcome=outcome, via=via)
    for reason in metrics.REFUSAL_REASONS:
        assert scraped.has("greenlight_decision_attempts_refused_total", reason=reason)
    for result in metrics.RESULTS:
        assert scraped.has("greenlight_notifications_total", channel="slack", result=result)
    assert scraped.value("greenlight_requests_decided_total", outcome="cancelled", via="slack") == 0
    assert [key for key in scraped.samples if key[0].endswith("_created")] == []
    build = [
        value for (name, _), value in scraped.samples.items() if name == "greenlight_build_info"
    ]
    assert build == [1.0]


def test_pending_gauge_follows_the_pending_requests(
    traced: SlackDeployment, requests: Requests, kubectl: Kubectl
) -> None:
    port = traced.operator.metrics_port

    def pending_in_cluster() -> int:
        items = kubectl.json("get", "apr", "--all-namespaces")["items"]
        return sum((item.get("status") or {}).get("phase") == "Pending" for item in items)

    def gauge_matches_cluster() -> int | None:
        gauge = scrape(port).value("greenlight_requests_pending")
        count = pending_in_cluster()
        return count if gauge == count else None

    requests.create("pending-one")
    requests.create("pending-two")
    with_two = int(poll(gauge_matches_cluster, 20))
    assert with_two >= 2
    assert scrape(port).value("greenlight_oldest_pending_request_age_seconds") > 0

    requests.annotate("pending-one", "greenlight.dev/decision=approve", as_user="alice")
    requests.phase("pending-one", "Approved")
    poll(lambda: gauge_matches_cluster() == with_two - 1, 20)


def test_a_decision_observes_its_admission_reviews_and_its_audit_write(
    traced: SlackDeployment, requests: Requests
) -> None:
    port = traced.operator.metrics_port
    requests.create("timed-one")
    requests.phase("timed-one", "Pending")
    before = scrape(port)

    requests.annotate("timed-one", "greenlight.dev/decision=approve", as_user="alice")
    requests.phase("timed-one", "Approved")

    after = scrape(port)
    for webhook in ("greenlight-admission-mutate", "greenlight-admission-validate"):
        count = "greenlight_admission_review_duration_seconds_count"
        assert after.since(before, count, webhook=webhook) >= 1
        assert (
            after.since(before, "greenlight_admission_review_duration_seconds_sum", webhook=webhook)
            > 0
        )
    written = after.since(before, "greenlight_audit_write_duration_seconds_count")
    assert written >= 1  # the decision's records, one group
    assert after.since(before, "greenlight_audit_write_duration_seconds_sum") > 0


def test_request_continues_the_sdk_trace_and_the_decision_links_to_it(
    traced: SlackDeployment,
    receiver: OtlpReceiver,
    orchestrator_spans: None,
    orchestrator: ApprovalClient,
    requests: Requests,
) -> None:
    with Workflow("e2e-release") as workflow, workflow.task("approval") as step:
        name = orchestrator.create(
            action="pulumi up",
            target="production",
            workflow_id=workflow.workflow_id,
            task_id=step.task_id,
            timeout="10m",
        )
        context = step.span.get_span_context()
    sdk_trace, sdk_span = (
        trace.format_trace_id(context.trace_id),
        trace.format_span_id(context.span_id),
    )

    def named(name_: str, **attributes: Any) -> Any:
        return lambda received: [
            s
            for s in received
            if s.name == name_ and all(s.attributes.get(k) == v for k, v in attributes.items())
        ]

    created = named(spans.REQUEST_CREATE, **{spans.ATTR_REQUEST_NAME: name})
    create = one(created(receiver.wait_for(created)), "create span")
    assert create.service_name == OPERATOR_SERVICE
    assert (create.trace_id, create.parent_span_id) == (sdk_trace, sdk_span), (
        "the operator's create span is a child of the SDK span that created the request"
    )
    assert create.attributes[spans.ATTR_WORKFLOW_ID] == workflow.workflow_id
    sdk_side = receiver.wait_for(lambda r: any(s.span_id == sdk_span for s in r))
    task_span = one([s for s in sdk_side if s.span_id == sdk_span], "task span")
    assert task_span.name == "task approval"
    assert task_span.service_name != OPERATOR_SERVICE

    notify_spans = named(spans.NOTIFY)
    received = receiver.wait_for(
        lambda r: any(s.parent_span_id == create.span_id for s in notify_spans(r))
    )
    notify = one(
        [s for s in notify_spans(received) if s.parent_span_id == create.span_id], "notify"
    )
    assert notify.attributes[spans.ATTR_CHANNEL] == "slack"
    received = receiver.wait_for(
        lambda r: any(s.name == "slack chat.postMessage" and s.trace_id == sdk_trace for s in r)
    )
    post = one(
        [s for s in received if s.name == "slack chat.postMessage" and s.trace_id == sdk_trace],
        "slack chat.postMessage span",
    )
    assert post.parent_span_id == notify.span_id
    assert any(s.name.startswith("k8s ") and s.trace_id == sdk_trace for s in received), (
        "Kubernetes calls made while handling the creation are spans of the same trace"
    )

    requests.notified(name)
    message = traced.message_for(requests.get(name)["metadata"]["uid"])
    assert traced.click(SLACK_ID["alice"], message, APPROVE_ACTION_ID) == 200
    requests.phase(name, "Approved")

    decided = named(
        spans.REQUEST_DECIDE, **{spans.ATTR_REQUEST_NAME: name, spans.ATTR_OUTCOME: "Approved"}
    )
    decide = one(decided(receiver.wait_for(decided)), "decide span")
    assert decide.trace_id != sdk_trace, "a decision later on starts a new trace"
    assert decide.parent_span_id == ""
    assert (sdk_trace, sdk_span) in decide.links, "…linked to the request's trace"
    assert decide.attributes[spans.ATTR_VIA] == "slack"
    resolving = named(spans.NOTIFY_RESOLVE)
    received = receiver.wait_for(
        lambda r: (
            any(s.parent_span_id == decide.span_id for s in resolving(r))
            and any(s.name == "slack chat.update" and s.trace_id == decide.trace_id for s in r)
        )
    )
    (resolve,) = [s for s in resolving(received) if s.parent_span_id == decide.span_id]
    update = [
        s for s in received if s.name == "slack chat.update" and s.trace_id == decide.trace_id
    ]
    assert update[0].parent_span_id == resolve.span_id

    marked = poll(
        lambda: [
            e
            for e in exemplars(traced.operator.metrics_port)
            if e.name == "greenlight_decision_duration_seconds_bucket"
            and e.exemplar_labels.get("trace_id") == sdk_trace
        ],
        10,
    )
    assert marked[0].labels["outcome"] == "approved"


def test_debug_log_of_the_traced_operator_keeps_the_contract_and_no_secret(
    traced: SlackDeployment,
) -> None:
    records = traced.log_records()
    assert any(r["level"] == "DEBUG" for r in records)
    handled = [r for r in records if r["workflow_id"].startswith("wf-") and r["trace_id"]]
    assert handled, "lines logged while handling a request carry its workflow and trace ids"
