"""The operator's /metrics: names, types, labels and values exactly as the contract says."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from prometheus_client.samples import Sample

from greenlight.telemetry import metrics

OUTCOMES = ("approved", "denied", "expired", "cancelled")
VIAS = ("slack", "teams", "kubectl", "expiry", "policy")
CHANNELS = ("console", "slack", "teams")
RESULTS = ("success", "failure")
REASONS = (
    "not_authorized",
    "not_in_approvers",
    "self_approval",
    "reason_required",
    "already_decided",
    "forged_annotation",
    "invalid_value",
    "invalid_signature",
    "stale_timestamp",
    "replayed",
    "invalid_token",
    "unknown_user",
    "untrusted_record",
    "unverified_request",
    "policy_refused",
    "foreign_tenant",
)
WEBHOOKS = (
    "greenlight-admission-mutate",
    "greenlight-admission-validate",
    "greenlight-admission-status",
    "greenlight-admission-delete",
    "greenlight-policy-validate-cluster",
    "greenlight-policy-validate",
)
DECISION_BUCKETS: tuple[str, ...] = ("30.0", "60.0", "120.0", "300.0", "600.0", "1800.0")
DECISION_BUCKETS += ("3600.0", "7200.0", "14400.0", "28800.0", "43200.0", "86400.0", "+Inf")

# Family name -> (type, label names) per the telemetry contract.
CONTRACT = {
    "greenlight_requests_created": ("counter", ()),
    "greenlight_requests_decided": ("counter", ("outcome", "via")),
    "greenlight_decision_duration_seconds": ("histogram", ("outcome",)),
    "greenlight_requests_pending": ("gauge", ()),
    "greenlight_oldest_pending_request_age_seconds": ("gauge", ()),
    "greenlight_notifications": ("counter", ("channel", "result")),
    "greenlight_notification_duration_seconds": ("histogram", ("channel",)),
    "greenlight_decision_attempts_refused": ("counter", ("reason",)),
    "greenlight_audit_write_failures": ("counter", ()),
    "greenlight_audit_write_duration_seconds": ("histogram", ()),
    "greenlight_audit_chain_broken": ("gauge", ()),
    "greenlight_follow_ups": ("counter", ("kind", "channel")),
    "greenlight_policy_evaluations": ("counter", ("outcome",)),
    "greenlight_receipts_issued": ("counter", ()),
    "greenlight_receipt_verifications": ("counter", ("result",)),
    "greenlight_executions_started": ("counter", ()),
    "greenlight_executions": ("counter", ("result",)),
    "greenlight_execution_duration_seconds": ("histogram", ()),
    "greenlight_execution_start_delay_seconds": ("histogram", ()),
    "greenlight_executions_unfinished": ("gauge", ()),
    "greenlight_oldest_unfinished_execution_age_seconds": ("gauge", ()),
    "greenlight_admission_review_duration_seconds": ("histogram", ("webhook",)),
    "greenlight_external_service_up": ("gauge", ("service",)),
    "greenlight_external_service_request_duration_seconds": ("histogram", ("service",)),
    "greenlight_build_info": ("gauge", ("version", "python_version")),
}

# Every labelled series that must exist, at 0, before anything happened.
ZERO_SERIES: list[tuple[str, dict[str, str]]] = (
    [("greenlight_requests_created_total", {})]
    + [("greenlight_requests_pending", {})]
    + [("greenlight_oldest_pending_request_age_seconds", {})]
    + [("greenlight_audit_write_failures_total", {})]
    + [("greenlight_audit_chain_broken", {})]
    + [("greenlight_receipts_issued_total", {}), ("greenlight_executions_started_total", {})]
    + [("greenlight_executions_unfinished", {})]
    + [("greenlight_oldest_unfinished_execution_age_seconds", {})]
    + [
        ("greenlight_receipt_verifications_total", {"result": r})
        for r in (
            "valid",
            "no_receipt",
            "not_requester",
            "already_claimed",
            "expired",
            "plan_mismatch",
            "untrusted_record",
        )
    ]
    + [("greenlight_executions_total", {"result": r}) for r in ("success", "failure", "unknown")]
    + [
        ("greenlight_requests_decided_total", {"outcome": o, "via": v})
        for o, v in itertools.product(OUTCOMES, VIAS)
    ]
    + [("greenlight_decision_duration_seconds_count", {"outcome": o}) for o in OUTCOMES]
    + [
        ("greenlight_notifications_total", {"channel": c, "result": r})
        for c, r in itertools.product(CHANNELS, RESULTS)
    ]
    + [("greenlight_notification_duration_seconds_count", {"channel": c}) for c in CHANNELS]
    + [("greenlight_decision_attempts_refused_total", {"reason": r}) for r in REASONS]
    + [("greenlight_admission_review_duration_seconds_count", {"webhook": w}) for w in WEBHOOKS]
)


def scrape(port: int, openmetrics: bool = False) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if openmetrics:
        request.add_header("Accept", "application/openmetrics-text; version=1.0.0")
    with urllib.request.urlopen(request, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


def samples(text: str) -> list[Sample]:
    return [sample for family in parse_prometheus(text) for sample in family.samples]


@pytest.fixture(scope="module")
def fresh_operator_metrics() -> Iterator[str]:
    """The /metrics text of a fresh process that only imported and served the metrics."""
    program = (
        "import sys\n"
        "from greenlight.telemetry import metrics\n"
        "server = metrics.serve(0, '127.0.0.1')\n"
        "print(server.port, flush=True)\n"
        "sys.stdin.read()\n"
        "server()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdin is not None
    port = int(process.stdout.readline())
    try:
        yield scrape(port)
    finally:
        process.stdin.close()
        assert process.wait(timeout=10) == 0


@pytest.fixture
def served() -> Iterator[int]:
    server = metrics.serve(0, "127.0.0.1")
    yield server.port
    server()


def test_every_contract_metric_is_served_with_its_type_and_labels(
    fresh_operator_metrics: str,
) -> None:
    families = {family.name: family for family in parse_prometheus(fresh_operator_metrics)}

    for name, (kind, labels) in CONTRACT.items():
        assert name in families, f"{name} is not served"
        assert families[name].type == kind, name
        for sample in families[name].samples:
            own = {key for key in sample.labels if key != "le"}
            assert own == set(labels), (sample.name, sample.labels)
    assert not {name for name in families if name.startswith("greenlight_")} - set(CONTRACT)


def test_every_labelled_series_starts_at_zero(fresh_operator_metrics: str) -> None:
    served = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for s in samples(fresh_operator_metrics)
    }

    for name, labels in ZERO_SERIES:
        key = (name, tuple(sorted(labels.items())))
        assert served.get(key) == 0.0, f"{name}{labels} is {served.get(key)}"


def test_only_the_known_label_values_are_exported(fresh_operator_metrics: str) -> None:
    decided = [
        s for s in samples(fresh_operator_metrics) if s.name == "greenlight_requests_decided_total"
    ]
    refused = [
        s
        for s in samples(fresh_operator_metrics)
        if s.name == "greenlight_decision_attempts_refused_total"
    ]

    assert len(decided) == len(OUTCOMES) * len(VIAS)
    assert sorted(s.labels["reason"] for s in refused) == sorted(REASONS)
    assert metrics.REFUSAL_REASONS == REASONS


def test_decision_histogram_has_the_buckets_from_half_a_minute_to_a_day(
    fresh_operator_metrics: str,
) -> None:
    buckets = [
        s.labels["le"]
        for s in samples(fresh_operator_metrics)
        if s.name == "greenlight_decision_duration_seconds_bucket"
        and s.labels["outcome"] == "denied"
    ]

    assert tuple(buckets) == DECISION_BUCKETS


def test_build_info_is_one_with_version_labels(fresh_operator_metrics: str) -> None:
    [info] = [s for s in samples(fresh_operator_metrics) if s.name == "greenlight_build_info"]

    assert info.value == 1.0
    assert info.labels["version"] not in ("", "unknown")
    assert info.labels["python_version"] == ".".join(map(str, sys.version_info[:3]))


def test_observe_decision_counts_and_records_the_trace_id_as_exemplar(served: int) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    before = metrics.OPERATOR_REGISTRY.get_sample_value(
        "greenlight_requests_decided_total", {"outcome": "denied", "via": "slack"}
    )

    metrics.observe_decision("denied", "slack", 1000.0, trace_id)

    text = scrape(served, openmetrics=True)
    families = {family.name: family for family in parse_openmetrics(text)}  # type: ignore[no-untyped-call]
    decided = {
        tuple(sorted(s.labels.items())): s.value
        for s in families["greenlight_requests_decided"].samples
    }
    assert decided[(("outcome", "denied"), ("via", "slack"))] == (before or 0) + 1
    [bucket] = [
        s
        for s in families["greenlight_decision_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels == {"outcome": "denied", "le": "1800.0"}
    ]
    assert bucket.exemplar is not None
    assert bucket.exemplar.labels == {"trace_id": trace_id}
    assert bucket.exemplar.value == 1000.0


def test_observe_notification_counts_by_channel_and_result() -> None:
    labels = {"channel": "slack", "result": "failure"}
    before = (
        metrics.OPERATOR_REGISTRY.get_sample_value("greenlight_notifications_total", labels) or 0
    )
    count = "greenlight_notification_duration_seconds_count"
    before_count = metrics.OPERATOR_REGISTRY.get_sample_value(count, {"channel": "slack"}) or 0

    metrics.observe_notification("slack", "failure", 0.3)

    assert (
        metrics.OPERATOR_REGISTRY.get_sample_value("greenlight_notifications_total", labels)
        == before + 1
    )
    assert (
        metrics.OPERATOR_REGISTRY.get_sample_value(count, {"channel": "slack"}) == before_count + 1
    )


def test_refuse_counts_a_known_reason() -> None:
    name = "greenlight_decision_attempts_refused_total"
    before = metrics.OPERATOR_REGISTRY.get_sample_value(name, {"reason": "self_approval"}) or 0

    metrics.refuse("self_approval")

    assert (
        metrics.OPERATOR_REGISTRY.get_sample_value(name, {"reason": "self_approval"}) == before + 1
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: metrics.observe_decision("rejected", "slack", 1.0, None),
        lambda: metrics.observe_decision("approved", "email", 1.0, None),
        lambda: metrics.observe_notification("email", "success", 1.0),
        lambda: metrics.refuse("because"),
        lambda: metrics.observe_admission_review("greenlight-admission-other", 0.001),
    ],
)
def test_unknown_label_values_are_refused_so_labels_stay_bounded(call: object) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match="is not a known label value"):
        call()


def test_a_connection_that_trickles_is_cut_and_one_client_holds_few_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from greenlight.telemetry import exposition

    monkeypatch.setattr(exposition, "CONNECTION_TIMEOUT", 1.0)
    server = metrics.serve(0, "127.0.0.1")
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(6)]
    try:
        time.sleep(0.2)
        for extra in held[exposition.MAX_PER_CLIENT :]:  # over this client's share: closed
            extra.settimeout(2)
            assert extra.recv(1024) == b""
        trickler = held[0]
        trickler.settimeout(0.05)
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5 and not closed:
            try:
                trickler.sendall(b"G")  # a byte at a time, inside the per-read timeout
                closed = trickler.recv(1024) == b""
            except TimeoutError:
                pass
            except OSError:
                closed = True
            time.sleep(0.2)
        assert closed
        assert time.monotonic() - started < 3  # cut at its deadline, not at the next silence
    finally:
        for connection in held:
            connection.close()
        server()


def test_stopping_the_server_releases_the_port() -> None:
    server = metrics.serve(0, "127.0.0.1")
    port = server.port
    assert "greenlight_requests_pending" in scrape(port)

    server()

    with pytest.raises(OSError, match="refused"):
        scrape(port)


def test_connections_that_send_nothing_are_bounded_and_timed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from greenlight.telemetry import exposition

    monkeypatch.setattr(exposition._Handler, "timeout", 1.0)
    server = metrics.serve(0, "127.0.0.1")
    threads_before = threading.active_count()
    idle = []
    try:
        for _ in range(exposition.MAX_CONNECTIONS + 20):
            connection = socket.create_connection(("127.0.0.1", server.port))
            connection.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
            idle.append(connection)
        time.sleep(0.3)
        assert threading.active_count() <= threads_before + exposition.MAX_CONNECTIONS
        # Past their timeout the silent connections are closed, and scrapes are served again.
        for connection in idle:
            connection.settimeout(5)
            assert connection.recv(1024) == b""  # closed: turned away, or timed out
        deadline = time.monotonic() + 5
        while threading.active_count() > threads_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= threads_before
        assert "greenlight_build_info" in scrape(server.port)
    finally:
        for connection in idle:
            connection.close()
        server()
