"""Small builders for Grafana dashboard JSON (schema version 39).

Dashboards are written as Python values in ``dashboard_specs.py`` and rendered to
``dashboards/*.json`` by ``build.py``, so every dashboard gets the same conventions for free:
a fixed ``uid``, a ``$datasource`` variable that every Prometheus panel queries through,
``$loki``/``$tempo`` variables for log and trace panels, and a grid laid out from rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

SCHEMA_VERSION = 39
PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
LOKI = {"type": "loki", "uid": "${loki}"}
TEMPO = {"type": "tempo", "uid": "${tempo}"}
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    """One PromQL or LogQL query of a panel; ``instant`` queries feed tables and stats."""

    expr: str
    legend: str = ""
    instant: bool = False
    exemplar: bool = False


@dataclass(frozen=True)
class Panel:
    """A panel before layout: its grid position is assigned by :func:`dashboard`."""

    body: JSON
    width: int
    height: int


@dataclass(frozen=True)
class Row:
    """A titled row of panels, laid out left to right and wrapped at the grid width."""

    title: str
    panels: list[Panel] = field(default_factory=list)


def _prometheus_targets(queries: list[Query], table: bool = False) -> list[JSON]:
    targets: list[JSON] = []
    for ref, query in zip("ABCDEFGHIJ", queries, strict=False):
        target: JSON = {
            "datasource": PROMETHEUS,
            "refId": ref,
            "expr": query.expr,
            "legendFormat": query.legend or "__auto",
            "range": not query.instant,
            "instant": query.instant,
        }
        if table:
            target["format"] = "table"
        if query.exemplar:
            target["exemplar"] = True
        targets.append(target)
    return targets


def _panel(
    kind: str,
    title: str,
    description: str,
    datasource: dict[str, str],
    targets: list[JSON],
    field_defaults: JSON,
    options: JSON,
    width: int,
    height: int,
    transformations: list[JSON] | None = None,
) -> Panel:
    body: JSON = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource,
        "targets": targets,
        "fieldConfig": {"defaults": field_defaults, "overrides": []},
        "options": options,
    }
    if transformations:
        body["transformations"] = transformations
    return Panel(body=body, width=width, height=height)


def _thresholds(steps: list[tuple[float | None, str]]) -> JSON:
    return {
        "mode": "absolute",
        "steps": [{"value": value, "color": color} for value, color in steps],
    }


def timeseries(
    title: str,
    description: str,
    queries: list[Query],
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    stack: bool = False,
    threshold: float | None = None,
) -> Panel:
    """A time series panel over Prometheus; ``threshold`` draws the alerting line."""
    custom: JSON = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 20 if stack else 10,
        "showPoints": "never",
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    defaults: JSON = {"unit": unit, "custom": custom}
    if threshold is not None:
        custom["thresholdsStyle"] = {"mode": "line+area"}
        defaults["thresholds"] = _thresholds([(None, "transparent"), (threshold, "red")])
    options: JSON = {
        "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel(
        "timeseries",
        title,
        description,
        PROMETHEUS,
        _prometheus_targets(queries),
        defaults,
        options,
        width,
        height,
    )


def stat(
    title: str,
    description: str,
    query: Query,
    unit: str = "short",
    steps: list[tuple[float | None, str]] | None = None,
    width: int = 4,
    height: int = 4,
) -> Panel:
    """A single-number panel; ``steps`` colour it (value thresholds, first value ``None``)."""
    defaults: JSON = {
        "unit": unit,
        "thresholds": _thresholds(steps or [(None, "green")]),
        "color": {"mode": "thresholds"},
    }
    options: JSON = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "textMode": "auto",
    }
    return _panel(
        "stat",
        title,
        description,
        PROMETHEUS,
        _prometheus_targets([query]),
        defaults,
        options,
        width,
        height,
    )


def table(
    title: str,
    description: str,
    query: Query,
    columns: dict[str, str],
    unit: str = "short",
    width: int = 24,
    height: int = 8,
) -> Panel:
    """A table of an instant query; ``columns`` maps the labels to show to their headers.

    Every other label (``job``, ``instance``, the timestamp) is hidden, and ``Value`` is
    shown under the header given for it.
    """
    transformations: list[JSON] = [
        {
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True, "__name__": True, "job": True, "instance": True},
                "indexByName": {name: index for index, name in enumerate(columns)},
                "renameByName": columns,
            },
        },
        {
            "id": "filterFieldsByName",
            "options": {"include": {"names": list(columns.values())}},
        },
    ]
    options: JSON = {"showHeader": True, "cellHeight": "sm"}
    return _panel(
        "table",
        title,
        description,
        PROMETHEUS,
        _prometheus_targets([query], table=True),
        {"unit": unit},
        options,
        width,
        height,
        transformations,
    )


def logs(title: str, description: str, expr: str, width: int = 24, height: int = 10) -> Panel:
    """Log lines from Loki through the ``$loki`` datasource variable."""
    targets: list[JSON] = [
        {"datasource": LOKI, "refId": "A", "expr": expr, "queryType": "range"},
    ]
    options: JSON = {
        "showTime": True,
        "wrapLogMessage": True,
        "enableLogDetails": True,
        "sortOrder": "Descending",
        "dedupStrategy": "none",
    }
    return _panel("logs", title, description, LOKI, targets, {}, options, width, height)


def log_rate(
    title: str, description: str, expr: str, legend: str, width: int = 12, height: int = 8
) -> Panel:
    """A time series of a LogQL metric query (for example errors per level) from ``$loki``."""
    targets: list[JSON] = [
        {
            "datasource": LOKI,
            "refId": "A",
            "expr": expr,
            "legendFormat": legend,
            "queryType": "range",
        },
    ]
    defaults: JSON = {"unit": "short", "custom": {"drawStyle": "bars", "fillOpacity": 60}}
    options: JSON = {"legend": {"displayMode": "list", "placement": "bottom"}}
    return _panel("timeseries", title, description, LOKI, targets, defaults, options, width, height)


def traces(title: str, description: str, traceql: str, width: int = 24, height: int = 10) -> Panel:
    """A table of traces found by a TraceQL search through the ``$tempo`` variable."""
    targets: list[JSON] = [
        {
            "datasource": TEMPO,
            "refId": "A",
            "queryType": "traceql",
            "query": traceql,
            "limit": 20,
            "tableType": "traces",
        },
    ]
    return _panel("table", title, description, TEMPO, targets, {}, {}, width, height)


def datasource_variable(name: str, kind: str, label: str) -> JSON:
    """A datasource picker, so the dashboard works with whatever the datasource is called."""
    return {
        "name": name,
        "label": label,
        "type": "datasource",
        "query": kind,
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_variable(
    name: str, label: str, query: str, multi: bool = False, all_value: str | None = None
) -> JSON:
    """A variable filled from a Prometheus ``label_values(...)`` query through ``$datasource``."""
    variable: JSON = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROMETHEUS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "current": {},
        "hide": 0,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": all_value is not None,
        "options": [],
    }
    if all_value is not None:
        variable["allValue"] = all_value
    return variable


def textbox_variable(name: str, label: str, default: str) -> JSON:
    """A free-text variable (for example a workflow id to search logs and traces for)."""
    return {
        "name": name,
        "label": label,
        "type": "textbox",
        "query": default,
        "current": {"text": default, "value": default},
        "hide": 0,
        "options": [],
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: list[JSON],
    rows: list[Row],
    time_from: str = "now-6h",
) -> JSON:
    """The full dashboard: fixed ``uid``, ``$datasource`` first, rows laid out on the grid."""
    panels: list[JSON] = []
    y = 0
    next_id = 1
    for row in rows:
        panels.append(
            {
                "type": "row",
                "id": next_id,
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                y += line_height
                x, line_height = 0, 0
            grid = {"h": panel.height, "w": panel.width, "x": x, "y": y}
            panels.append({"id": next_id, "gridPos": grid, **panel.body})
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["greenlight"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "timezone": "utc",
        "refresh": "1m",
        "time": {"from": time_from, "to": "now"},
        "annotations": {"list": []},
        "links": [
            {
                "title": "Greenlight dashboards",
                "type": "dashboards",
                "tags": ["greenlight"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": variables},
        "panels": panels,
    }
