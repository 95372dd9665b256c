"""Every PromQL panel, and every alert and recording rule, run on real data.

A real operator (``greenlight operator`` against the test control plane) goes through a
scenario: requests approved, denied and left pending, a decision attempt refused, external
services probed (one up, one down). An instrumented orchestrator (``agent_workload.py``) runs
workflows: some succeed, one fails, one waits for an approval with a task past its deadline.
A real Prometheus scrapes both, labelled as the ServiceMonitors label them, and evaluates the
shipped rules. Then every panel query must return at least one series, except the panels
listed in ``NEEDS_A_CLUSTER`` with the reason this test cannot feed them.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.observability.prometheus_stack import Server, prometheus
from tests.observability.promql_names import metric_names
from tests.observability.shipped_files import DASHBOARDS_DIR, rule_files
from tests.support.kubectl import Kubectl
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.devcluster import ControlPlane
from greenlight.devcluster.controlplane import free_port

HERE = Path(__file__).resolve().parent
NAMESPACE_LABEL = "greenlight"  # the operator's namespace, as the ServiceMonitor labels series
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": NAMESPACE_LABEL,
    "$workflow": ".*",
    "$pod": ".*",
}
# Panels (dashboard uid, panel title) whose series only a real cluster produces.
NEEDS_A_CLUSTER = {
    ("greenlight-external-services", "Vault blackbox probe"): (
        "probe_success of job blackbox-vault: the blackbox exporter probing a Vault"
    ),
    ("greenlight-external-services", "Vault probe duration"): (
        "probe_duration_seconds of job blackbox-vault: the blackbox exporter probing a Vault"
    ),
    ("greenlight-operator", "Firing Greenlight alerts"): (
        "ALERTS of a firing Greenlight alert: needs an outage (a healthy run fires none)"
    ),
}
# Dashboards whose every panel reads series of the cluster itself or managed services.
CLUSTER_DASHBOARDS = {
    "greenlight-sandbox": (
        "cAdvisor (container_*), kube-state-metrics (kube_pod_*), Qdrant and Redis exporters: "
        "a kubelet, kube-state-metrics and the managed services in a real cluster"
    ),
}
# Metric names the shipped rules read that only a real cluster produces (rule health is
# checked for every rule regardless).
CLUSTER_METRICS = {"probe_success"}
# The Prometheus job names of the ServiceMonitors (operator chart, agent docs).
OPERATOR_JOB = "greenlight-operator"
AGENT_JOB = "greenlight-agent"
SCRAPE_INTERVAL_S = 1
WARM_UP_S = 20


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def promql_panels() -> list[tuple[str, str, str, str]]:
    """(dashboard uid, panel title, refId, expression) of every Prometheus target."""
    found = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == "prometheus":
                    found.append(
                        (dashboard["uid"], panel["title"], target["refId"], target["expr"])
                    )
    return found


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


PANELS = promql_panels()


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    """A status endpoint per service: /up answers 200, /down 503."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/up" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output stays the test's."""


@pytest.fixture(scope="module")
def status_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The instrumented orchestrator, serving its metrics; yields the port."""
    port = free_port()
    log = tmp_path_factory.mktemp("agent") / "agent.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "agent_workload.py"), str(port)],
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
        )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready", log.read_text()
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _apr(kubectl: Kubectl, namespace: str, name: str, as_user: str) -> None:
    manifest = {
        "apiVersion": "greenlight.dev/v1alpha1",
        "kind": "ApprovalRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "action": "pulumi destroy",
            "target": "staging",
            "requester": {"workflowId": f"wf-{name}"},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(manifest), as_user=as_user)
    kubectl(
        "-n",
        namespace,
        "wait",
        f"apr/{name}",
        "--for=jsonpath={.status.conditions[?(@.type=='Notified')].status}=True",
        "--timeout=30s",
    )


def _decide(kubectl: Kubectl, namespace: str, name: str, user: str, *annotations: str) -> None:
    kubectl("-n", namespace, "annotate", f"apr/{name}", *annotations, as_user=user, check=False)


@pytest.fixture
def scenario_operator(
    control_plane: ControlPlane,
    operator_process: OperatorProcess,
    tmp_path: Path,
    status_server: str,
) -> Iterator[OperatorProcess]:
    """An operator of its own, with two external services to probe every second."""
    checks = tmp_path / "health-checks.yaml"
    checks.write_text(
        yaml.safe_dump(
            [
                {"name": "vault", "url": f"{status_server}/up", "interval": 1},
                {"name": "github", "url": f"{status_server}/down", "interval": 1},
            ]
        )
    )
    operator_process.stop()  # one operator at a time owns the webhook configuration
    own = OperatorProcess(
        control_plane, tmp_path / "operator", env={"GREENLIGHT_HEALTH_CHECKS_FILE": str(checks)}
    )
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def scraped(
    scenario_operator: OperatorProcess,
    agent: int,
    kubectl: Kubectl,
    people: People,
    tmp_path: Path,
) -> Iterator[Server]:
    """Prometheus after scraping the scenario for a while."""
    namespace = people.namespace
    _apr(kubectl, namespace, "approved", people.orchestrator)
    _decide(kubectl, namespace, "approved", people.alice, "greenlight.dev/decision=approve")
    _apr(kubectl, namespace, "denied", people.orchestrator)
    _decide(
        kubectl,
        namespace,
        "denied",
        people.bob,
        "greenlight.dev/decision=deny",
        "greenlight.dev/reason=not now",
    )
    _apr(kubectl, namespace, "pending", people.orchestrator)
    _decide(kubectl, namespace, "pending", people.mallory, "greenlight.dev/decision=approve")
    for name, phase in (("approved", "Approved"), ("denied", "Denied")):
        kubectl(
            "-n",
            namespace,
            "wait",
            f"apr/{name}",
            f"--for=jsonpath={{.status.phase}}={phase}",
            "--timeout=30s",
        )
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "rule_files": [str(path) for path in rule_files()],
        "scrape_configs": [
            {
                "job_name": OPERATOR_JOB,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{scenario_operator.metrics_port}"],
                        "labels": {"namespace": NAMESPACE_LABEL, "pod": "greenlight-0"},
                    }
                ],
            },
            {
                "job_name": AGENT_JOB,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{agent}"],
                        "labels": {"namespace": NAMESPACE_LABEL, "pod": "orchestrator-0"},
                    }
                ],
            },
        ],
    }
    with prometheus(tmp_path / "prometheus", config) as server:
        time.sleep(WARM_UP_S)
        # The decision counters moved while Prometheus watched: decide one more request now.
        _apr(kubectl, namespace, "late", people.orchestrator)
        _decide(kubectl, namespace, "late", people.alice, "greenlight.dev/decision=approve")
        time.sleep(5)
        yield server


def _series(server: Server, expr: str) -> list[Any]:
    """The series of an instant query now; a query error fails with Prometheus' message."""
    response = server.get_json("/api/v1/query", query=expr)
    assert response["status"] == "success", (expr, response.get("error"))
    result: list[Any] = response["data"]["result"]
    return result


@pytest.mark.timeout(300)
def test_every_promql_panel_and_rule_returns_data_from_a_real_operator(scraped: Server) -> None:
    empty: list[str] = []
    fed, exempt = 0, 0
    for uid, title, ref, expr in PANELS:
        if uid in CLUSTER_DASHBOARDS or (uid, title) in NEEDS_A_CLUSTER:
            exempt += 1
            _series(scraped, substitute(expr))  # still valid PromQL on real data
            continue
        if _series(scraped, substitute(expr)):
            fed += 1
        else:
            empty.append(f"{uid} / {title} / {ref}: {expr}")
    print(f"{fed} PromQL panel queries returned data; {exempt} need a cluster")
    assert empty == [], "panels without data:\n" + "\n".join(empty)

    loaded = scraped.get_json("/api/v1/rules")["data"]["groups"]
    evaluated = [rule for group in loaded for rule in group["rules"]]
    assert len(evaluated) == len(rules())
    unhealthy = [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"]
    assert unhealthy == []
    missing = sorted(
        {
            name
            for rule in rules()
            for name in metric_names(rule["expr"])
            if name not in CLUSTER_METRICS and not _series(scraped, f"count({name})")
        }
    )
    assert missing == [], f"rules read series nothing produced: {missing}"


def test_listed_panels_exist_on_the_dashboards() -> None:
    titles = {(uid, title) for uid, title, _, _ in PANELS}
    assert set(NEEDS_A_CLUSTER) <= titles
    assert {uid for uid, _ in titles} >= set(CLUSTER_DASHBOARDS)
