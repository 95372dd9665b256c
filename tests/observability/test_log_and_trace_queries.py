"""Every LogQL and TraceQL expression of the dashboards parses with Grafana's own grammars."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tests.observability.shipped_files import DASHBOARDS_DIR
from tests.support.query_grammars import Language, parse

LANGUAGE = {"loki": "logql", "tempo": "traceql"}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[tuple[str, Language, str]]:
    """(dashboard uid, language, expression) of every Loki and Tempo target."""
    found: list[tuple[str, Language, str]] = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                kind = target["datasource"]["type"]
                if kind == "loki":
                    found.append((dashboard["uid"], "logql", target["expr"]))
                elif kind == "tempo":
                    found.append((dashboard["uid"], "traceql", target["query"]))
    return found


QUERIES = dashboard_queries()


def test_dashboards_carry_log_and_trace_queries() -> None:
    languages = {language for _, language, _ in QUERIES}
    assert languages == {"logql", "traceql"}


@pytest.mark.parametrize(
    ("dashboard", "language", "query"),
    QUERIES,
    ids=[f"{uid}-{language}-{i}" for i, (uid, language, _) in enumerate(QUERIES)],
)
def test_dashboard_query_parses(dashboard: str, language: Language, query: str) -> None:
    (verdict,) = parse([(language, query)])
    assert verdict.ok, (dashboard, query, verdict.error)


@pytest.mark.parametrize(
    ("language", "broken"),
    [
        ("logql", '{namespace="$namespace", app="greenlight" | json'),
        ("logql", 'sum by (level) (count_over_time({app="greenlight"} | json [$__interval])'),
        ("logql", '{app="greenlight"} |= "x" | jsn'),
        ("traceql", '{ resource.service.name = "greenlight-operator" '),
        ("traceql", "{ resource.service.name = }"),
    ],
)
def test_a_broken_query_fails_the_check(language: Language, broken: str) -> None:
    (verdict,) = parse([(language, broken)])
    assert not verdict.ok
    assert verdict.error is not None
    assert "syntax error" in verdict.error
