"""One real alert path: metrics -> Prometheus rules -> Alertmanager routing -> PagerDuty/Slack.

A real Prometheus (Debian package) scrapes a prometheus_client endpoint this test drives, with
the shipped rule files; a real Alertmanager runs the shipped configuration. Only three things
differ from production, all written into temporary copies:

- every ``for:`` in the rules is scaled from minutes to seconds (5m -> 5s), so the test takes
  seconds instead of minutes while the rules keep their relative order of firing;
- the Alertmanager's ``group_wait`` is 1s instead of 30s (timing only: the routing tree, the
  receivers and the inhibit rules are the shipped ones);
- the PagerDuty events URL and the mounted secret files point at a local receiver and
  temporary files the test writes.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from tests.observability.prometheus_stack import Server, alertmanager, prometheus
from tests.observability.shipped_files import ALERTMANAGER_CONFIG, rule_files

from greenlight.devcluster.controlplane import free_port

SECRETS_DIR = "/etc/alertmanager/secrets/greenlight-alerting/"
ROUTING_KEY = "test-routing-key-3f9a"
DELIVERY_TIMEOUT_S = 60.0
QUIET_PERIOD_S = 4.0


@dataclass
class Receiver:
    """A local stand-in for the PagerDuty Events API and a Slack incoming webhook."""

    url: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    pagerduty: list[dict[str, Any]] = field(default_factory=list)
    slack: list[dict[str, Any]] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    def record(self, path: str, body: dict[str, Any]) -> None:
        with self.lock:
            if path == "/pagerduty":
                self.pagerduty.append(body)
            elif path == "/slack":
                self.slack.append(body)
            else:
                self.other.append(path)

    def paged_alerts(self) -> list[str]:
        """Alert names of the PagerDuty events (the description starts with the alertname)."""
        with self.lock:
            return sorted(event["payload"]["summary"].split(":")[0] for event in self.pagerduty)

    def slack_alerts(self) -> list[str]:
        """Alert names of the Slack messages (the title ends with the alertname)."""
        with self.lock:
            titles = [message["attachments"][0]["title"] for message in self.slack]
        return sorted(re.sub(r"^\[FIRING:\d+\] ", "", title) for title in titles)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    port = free_port()
    state = Receiver(url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.record(self.path, body)
            reply = b'{"status":"success"}' if self.path == "/pagerduty" else b"ok"
            self.send_response(202 if self.path == "/pagerduty" else 200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class OperatorMetrics:
    """The operator's contract metrics this test drives, served like the operator serves them."""

    url: str
    audit_write_failures: Counter
    external_service_up: Gauge


@pytest.fixture
def operator_metrics() -> Iterator[OperatorMetrics]:
    registry = CollectorRegistry()
    failures = Counter(
        "greenlight_audit_write_failures",
        "Audit record writes that failed.",
        registry=registry,
    )
    up = Gauge(
        "greenlight_external_service_up",
        "1 when the service's health check passes.",
        ["service"],
        registry=registry,
    )
    for service in ("vault", "github", "slack"):
        up.labels(service=service).set(1)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield OperatorMetrics(f"127.0.0.1:{port}", failures, up)
    server.shutdown()
    thread.join(timeout=5)


def scaled_rule_file(source: Path, target: Path) -> Path:
    """A copy of ``source`` whose ``for:`` durations are read in seconds instead of minutes."""
    document = yaml.safe_load(source.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                assert re.fullmatch(r"\d+m", rule["for"]), rule["for"]
                rule["for"] = rule["for"].replace("m", "s")
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def alertmanager_config(receiver: Receiver, secrets: Path) -> dict[str, Any]:
    """The shipped configuration, pointed at ``receiver`` and secret files under ``secrets``."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["global"]["pagerduty_url"] = f"{receiver.url}/pagerduty"
    config["route"]["group_wait"] = "1s"

    def relocate(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: relocate(value) for key, value in node.items()}
        if isinstance(node, list):
            return [relocate(item) for item in node]
        if isinstance(node, str) and node.startswith(SECRETS_DIR):
            return str(secrets / node.removeprefix(SECRETS_DIR))
        return node

    relocated: dict[str, Any] = relocate(config)
    return relocated


@pytest.fixture
def stack(
    tmp_path: Path, receiver: Receiver, operator_metrics: OperatorMetrics
) -> Iterator[Server]:
    """Alertmanager and Prometheus wired to the metrics source and the local receiver."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "pagerduty-routing-key").write_text(ROUTING_KEY + "\n")
    (secrets / "slack-webhook-url").write_text(f"{receiver.url}/slack\n")
    am_config = alertmanager_config(receiver, secrets)
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    rules = [str(scaled_rule_file(path, rules_dir / path.name)) for path in rule_files()]
    with alertmanager(tmp_path / "alertmanager", am_config) as am:
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rules,
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [am.url.removeprefix("http://")]}]}
                ]
            },
            "scrape_configs": [
                {
                    "job_name": "greenlight-operator",
                    "static_configs": [
                        {
                            "targets": [operator_metrics.url],
                            "labels": {"namespace": "greenlight"},
                        }
                    ],
                }
            ],
        }
        with prometheus(tmp_path / "prometheus", prom_config) as prom:
            yield prom


def eventually(condition: Callable[[], bool], timeout: float) -> bool:
    """Polls ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return False


def scraped_samples(prom: Server) -> int:
    response = prom.get_json(
        "/api/v1/query", query='count_over_time(up{job="greenlight-operator"}[1m])'
    )
    results = response["data"]["result"]
    return int(results[0]["value"][1]) if results else 0


def active_alerts(prom: Server) -> list[str]:
    response = prom.get_json("/api/v1/alerts")
    return sorted(alert["labels"]["alertname"] for alert in response["data"]["alerts"])


@pytest.mark.timeout(120)
def test_failing_audit_vault_and_github_page_and_post_to_the_right_receivers(
    stack: Server, receiver: Receiver, operator_metrics: OperatorMetrics
) -> None:
    # Healthy first: several scrapes and rule evaluations, and nothing is sent anywhere.
    assert eventually(lambda: scraped_samples(stack) >= 6, 30), stack.log.read_text()
    assert active_alerts(stack) == []
    assert (receiver.pagerduty, receiver.slack, receiver.other) == ([], [], [])

    operator_metrics.audit_write_failures.inc(3)
    operator_metrics.external_service_up.labels(service="vault").set(0)
    operator_metrics.external_service_up.labels(service="github").set(0)

    critical = ["GreenlightAuditWritesFailing", "GreenlightVaultUnreachable"]
    everything = sorted([*critical, "GreenlightExternalServiceUnhealthy"])
    delivered = eventually(
        lambda: receiver.paged_alerts() == critical and receiver.slack_alerts() == everything,
        DELIVERY_TIMEOUT_S,
    )
    assert delivered, (receiver.paged_alerts(), receiver.slack_alerts(), active_alerts(stack))
    time.sleep(QUIET_PERIOD_S)

    assert receiver.paged_alerts() == critical
    assert receiver.slack_alerts() == everything
    assert receiver.other == []
    for event in receiver.pagerduty:
        assert event["routing_key"] == ROUTING_KEY
        assert event["event_action"] == "trigger"
        assert event["payload"]["severity"] == "critical"
    for message in receiver.slack:
        assert message["channel"] == "#greenlight-alerts"
        assert message["attachments"][0]["title_link"].startswith(
            "https://github.com/greenlight-dev/greenlight/blob/main/docs/runbooks.md#greenlight"
        )
