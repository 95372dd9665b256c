"""The Greenlight conventions on top of grafana-foundation-sdk's dashboard builders.

Dashboards are written as Python values in ``dashboard_specs.py`` and rendered to
``dashboards/*.json`` by ``build.py``. The builders of `grafana-foundation-sdk` (Grafana's own
typed models, pinned for Grafana 11.6) produce the JSON; this module adds what every Greenlight
dashboard shares: a fixed ``uid``, a ``$datasource`` variable that every Prometheus panel queries
through, ``$loki``/``$tempo`` variables for log and trace panels, and rows laid out on the grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import logs as logs_builders
from grafana_foundation_sdk.builders import loki as loki_builders
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import table as table_builders
from grafana_foundation_sdk.builders import tempo as tempo_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.cog import builder as cog_builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models import tempo as tempo_models

JSON = dict[str, Any]
PanelBuilder = cog_builder.Builder[dashboard_models.Panel]

PROMETHEUS = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")
LOKI = dashboard_models.DataSourceRef(type_val="loki", uid="${loki}")
TEMPO = dashboard_models.DataSourceRef(type_val="tempo", uid="${tempo}")
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel; ``instant`` queries feed tables and stats."""

    expr: str
    legend: str = ""
    instant: bool = False
    exemplar: bool = False


@dataclass(frozen=True)
class Panel:
    """A panel before layout: its grid position is assigned by :func:`dashboard`."""

    builder: PanelBuilder
    width: int
    height: int


@dataclass(frozen=True)
class Row:
    """A titled row of panels, laid out left to right and wrapped at the grid width."""

    title: str
    panels: list[Panel] = field(default_factory=list)


def _prometheus_targets(
    queries: list[Query], table: bool = False
) -> list[cog_builder.Builder[Any]]:
    targets: list[cog_builder.Builder[Any]] = []
    for ref, query in zip("ABCDEFGHIJ", queries, strict=False):
        target = (
            prometheus_builders.Dataquery()
            .datasource(PROMETHEUS)
            .ref_id(ref)
            .expr(query.expr)
            .legend_format(query.legend or "__auto")
        )
        target = target.instant() if query.instant else target.range()
        if table:
            target = target.format(prometheus_models.PromQueryFormat.TABLE)
        if query.exemplar:
            target = target.exemplar(True)
        targets.append(target)
    return targets


def _thresholds(
    steps: list[tuple[float | None, str]],
) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_models.Threshold(value=value, color=color) for value, color in steps])
    )


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
    stacking = common_models.StackingMode.NORMAL if stack else common_models.StackingMode.NONE
    panel = (
        timeseries_builders.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .targets(_prometheus_targets(queries))
        .unit(unit)
        .draw_style(common_models.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(20 if stack else 10)
        .show_points(common_models.VisibilityMode.NEVER)
        .stacking(common_builders.StackingConfig().mode(stacking).group("A"))
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
    )
    if threshold is not None:
        panel = panel.thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common_models.GraphThresholdsStyleMode.LINE_AND_AREA
            )
        ).thresholds(_thresholds([(None, "transparent"), (threshold, "red")]))
    return Panel(panel, width, height)


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
    panel = (
        stat_builders.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .targets(_prometheus_targets([query]))
        .unit(unit)
        .thresholds(_thresholds(steps or [(None, "green")]))
        .color_scheme(
            dashboard_builders.FieldColor().mode(dashboard_models.FieldColorModeId.THRESHOLDS)
        )
        .reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)
        )
        .color_mode(common_models.BigValueColorMode.BACKGROUND)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .text_mode(common_models.BigValueTextMode.AUTO)
    )
    return Panel(panel, width, height)


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
    organize = dashboard_models.DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": {"Time": True, "__name__": True, "job": True, "instance": True},
            "indexByName": {name: index for index, name in enumerate(columns)},
            "renameByName": columns,
        },
    )
    keep = dashboard_models.DataTransformerConfig(
        id_val="filterFieldsByName",
        options={"include": {"names": list(columns.values())}},
    )
    panel = (
        table_builders.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .targets(_prometheus_targets([query], table=True))
        .unit(unit)
        .transformations([organize, keep])
        .show_header(True)
        .cell_height(common_models.TableCellHeight.SM)
    )
    return Panel(panel, width, height)


def logs(title: str, description: str, expr: str, width: int = 24, height: int = 10) -> Panel:
    """Log lines from Loki through the ``$loki`` datasource variable."""
    panel = (
        logs_builders.Panel()
        .title(title)
        .description(description)
        .datasource(LOKI)
        .targets(
            [loki_builders.Dataquery().datasource(LOKI).ref_id("A").expr(expr).query_type("range")]
        )
        .show_time(True)
        .wrap_log_message(True)
        .enable_log_details(True)
        .sort_order(common_models.LogsSortOrder.DESCENDING)
        .dedup_strategy(common_models.LogsDedupStrategy.NONE)
    )
    return Panel(panel, width, height)


def log_rate(
    title: str, description: str, expr: str, legend: str, width: int = 12, height: int = 8
) -> Panel:
    """A time series of a LogQL metric query (for example errors per level) from ``$loki``."""
    panel = (
        timeseries_builders.Panel()
        .title(title)
        .description(description)
        .datasource(LOKI)
        .targets(
            [
                loki_builders.Dataquery()
                .datasource(LOKI)
                .ref_id("A")
                .expr(expr)
                .legend_format(legend)
                .query_type("range")
            ]
        )
        .unit("short")
        .draw_style(common_models.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    return Panel(panel, width, height)


def traces(title: str, description: str, traceql: str, width: int = 24, height: int = 10) -> Panel:
    """A table of traces found by a TraceQL search through the ``$tempo`` variable."""
    panel = (
        table_builders.Panel()
        .title(title)
        .description(description)
        .datasource(TEMPO)
        .targets(
            [
                tempo_builders.TempoQuery()
                .datasource(TEMPO)
                .ref_id("A")
                .query_type("traceql")
                .query(traceql)
                .limit(20)
                .table_type(tempo_models.SearchTableType.TRACES)
            ]
        )
    )
    return Panel(panel, width, height)


Variable = cog_builder.Builder[dashboard_models.VariableModel]


def datasource_variable(name: str, kind: str, label: str) -> Variable:
    """A datasource picker, so the dashboard works with whatever the datasource is called."""
    return (
        dashboard_builders.DatasourceVariable(name)
        .label(label)
        .type(kind)
        .hide(dashboard_models.VariableHide.DONT_HIDE)
        .regex("")
    )


def query_variable(
    name: str, label: str, query: str, multi: bool = False, all_value: str | None = None
) -> Variable:
    """A variable filled from a Prometheus ``label_values(...)`` query through ``$datasource``."""
    variable = (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query({"query": query, "refId": f"{name}-values"})
        .hide(dashboard_models.VariableHide.DONT_HIDE)
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(all_value is not None)
    )
    if all_value is not None:
        variable = variable.all_value(all_value)
    return variable


def textbox_variable(name: str, label: str, default: str) -> Variable:
    """A free-text variable (for example a workflow id to search logs and traces for)."""
    return (
        dashboard_builders.TextBoxVariable(name)
        .label(label)
        .default_value(default)
        .current(dashboard_models.VariableOption(text=default, value=default))
        .hide(dashboard_models.VariableHide.DONT_HIDE)
    )


def _positioned(panel: Panel, panel_id: int, x: int, y: int) -> PanelBuilder:
    built = panel.builder.build()
    built.id_val = panel_id
    built.grid_pos = dashboard_models.GridPos(h=panel.height, w=panel.width, x=x, y=y)
    return _Built(built)


class _Built(cog_builder.Builder[dashboard_models.Panel]):
    """A panel already built and placed (the SDK's own layout would move a panel at x=0, y=0)."""

    def __init__(self, panel: dashboard_models.Panel) -> None:
        self._panel = panel

    def build(self) -> dashboard_models.Panel:
        return self._panel


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: list[Variable],
    rows: list[Row],
    time_from: str = "now-6h",
) -> JSON:
    """The full dashboard as JSON: fixed ``uid``, ``$datasource`` first, rows laid out on the
    grid (a panel that does not fit in the line's remaining width starts the next line)."""
    builder = (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["greenlight"])
        .editable()
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .timezone("utc")
        .refresh("1m")
        .time(time_from, "now")
        .version(1)
        .link(
            dashboard_builders.DashboardLink("Greenlight dashboards")
            .type(dashboard_models.DashboardLinkType.DASHBOARDS)
            .tags(["greenlight"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .variables(variables)
    )
    y = 0
    next_id = 1
    for row in rows:
        builder = builder.with_row(
            dashboard_builders.Row(row.title)
            .id(next_id)
            .collapsed(False)
            .grid_pos(dashboard_models.GridPos(h=1, w=GRID_WIDTH, x=0, y=y))
        )
        next_id += 1
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                y += line_height
                x, line_height = 0, 0
            builder = builder.with_panel(_positioned(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    rendered: JSON = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return rendered
