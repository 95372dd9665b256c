"""The shipped Grafana dashboards: well-formed, on fixed uids, and querying real metric names."""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.observability.alerting_contract import is_known_metric
from tests.observability.prometheus_stack import Server, prometheus
from tests.observability.promql_names import metric_names
from tests.observability.shipped_files import DASHBOARDS_DIR

EXPECTED_UIDS = {
    "greenlight-approvals",
    "greenlight-agent",
    "greenlight-external-services",
    "greenlight-operator",
    "greenlight-sandbox",
}
# Values Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": "greenlight",
    "$workflow": ".*",
    "$pod": ".*",
}
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*\w+\)$")


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def prometheus_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and the selectors of query variables."""
    queries = [
        target["expr"]
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == "prometheus"
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"]["query"])
            assert match, variable["query"]
            queries.append(match["selector"])
    return queries


def substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


ALL_QUERIES = [
    (path.stem, query) for path in dashboard_files() for query in prometheus_queries(load(path))
]


def test_dashboards_are_built_with_the_grafana_11_6_flavour_of_the_sdk() -> None:
    # An unpinned install resolves to an older flavour: the epoch prefix sorts it higher.
    assert importlib.metadata.version("grafana-foundation-sdk") == "1769699379!11.6.0"
    for path in dashboard_files():
        assert load(path)["schemaVersion"] == 41, path.name


def test_every_dashboard_is_shipped_under_its_fixed_uid() -> None:
    uids = [load(path)["uid"] for path in dashboard_files()]
    assert sorted(uids) == sorted(EXPECTED_UIDS)
    for path in dashboard_files():
        assert load(path)["uid"] == path.stem


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: path.stem)
def test_dashboard_queries_prometheus_through_the_datasource_variable(path: Path) -> None:
    dashboard = load(path)
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    uid_by_type = {"prometheus": "${datasource}", "loki": "${loki}", "tempo": "${tempo}"}
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        kind = panel["datasource"]["type"]
        assert panel["datasource"]["uid"] == uid_by_type[kind], panel["title"]
        variable = uid_by_type[kind].strip("${}")
        assert (variables[variable]["type"], variables[variable]["query"]) == ("datasource", kind)
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: path.stem)
def test_dashboard_panels_have_unique_ids_and_fit_the_grid(path: Path) -> None:
    all_panels = list(panels(load(path)))
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids))
    for panel in all_panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: path.stem)
def test_dashboard_uses_only_contract_or_known_external_metrics(path: Path) -> None:
    names_per_query = [metric_names(substitute(query)) for query in prometheus_queries(load(path))]
    assert all(names_per_query)
    unknown = {name for names in names_per_query for name in names if not is_known_metric(name)}
    assert unknown == set()


def test_metric_name_check_rejects_a_misspelled_contract_metric() -> None:
    query = 'sum(rate(greenlight_request_created_total{namespace="$namespace"}[5m])) by (job)'
    assert metric_names(substitute(query)) == {"greenlight_request_created_total"}
    assert not is_known_metric("greenlight_request_created_total")
    assert is_known_metric("greenlight_decision_duration_seconds_bucket")
    assert not is_known_metric("greenlight_requests_pending_bucket")


def test_dashboards_show_loki_logs_and_tempo_traces() -> None:
    kinds = {
        panel["datasource"]["type"]
        for path in dashboard_files()
        for panel in panels(load(path))
        if panel["type"] != "row"
    }
    assert kinds == {"prometheus", "loki", "tempo"}


def test_agent_dashboard_lists_overdue_tasks_from_the_deadline_gauge() -> None:
    dashboard = load(DASHBOARDS_DIR / "greenlight-agent.json")
    (overdue,) = [
        panel for panel in panels(dashboard) if panel["title"] == "Tasks past their deadline"
    ]
    assert overdue["type"] == "table"
    assert "greenlight_task_deadline_timestamp_seconds" in overdue["targets"][0]["expr"]
    columns = overdue["transformations"][0]["options"]["renameByName"]
    assert {"workflow_id", "task_id"} <= set(columns)


@pytest.fixture(scope="module")
def query_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real, empty Prometheus: it parses and evaluates every dashboard query."""
    config = {"global": {"scrape_interval": "1m", "evaluation_interval": "1m"}}
    with prometheus(tmp_path_factory.mktemp("dashboard-queries"), config) as server:
        yield server


@pytest.mark.parametrize(
    ("dashboard", "query"),
    ALL_QUERIES,
    ids=[f"{uid}-{i}" for i, (uid, _) in enumerate(ALL_QUERIES)],
)
def test_dashboard_query_is_valid_promql(query_server: Server, dashboard: str, query: str) -> None:
    response = query_server.get_json("/api/v1/query", query=substitute(query))
    assert response["status"] == "success", (dashboard, query, response.get("error"))
