"""Renders the files GitOps applies from the sources people edit.

Sources (edit these):
  rules/*.yaml          Prometheus rule files (plain ``groups:``), tested by rules/tests/
  dashboard_specs.py    the Grafana dashboards, built with grafana.py

Outputs (never edit; rendered by ``python observability/build.py``):
  generated/prometheusrule.yaml   the rule files' groups inside one PrometheusRule resource
  dashboards/<uid>.json           one Grafana dashboard per spec

``--check`` renders in memory and exits 1 naming every output that differs from the source,
so a test (and CI) catches an edit that was not rebuilt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from dashboard_specs import DASHBOARDS

HERE = Path(__file__).resolve().parent
RULES_DIR = HERE / "rules"
GENERATED_RULE = HERE / "generated" / "prometheusrule.yaml"
DASHBOARDS_DIR = HERE / "dashboards"

PROMETHEUS_RULE_NAME = "greenlight"
PROMETHEUS_RULE_LABELS = {
    "app.kubernetes.io/name": "greenlight",
    "app.kubernetes.io/component": "alerting",
    "app.kubernetes.io/part-of": "greenlight",
}


class _BlockStyleDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, descriptions) as ``|`` blocks, like the sources."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def rule_files() -> list[Path]:
    """The rule files in the order they are concatenated (sorted by name)."""
    return sorted(RULES_DIR.glob("*.yaml"))


def render_prometheus_rule() -> str:
    """All groups of all rule files in one ``monitoring.coreos.com/v1`` PrometheusRule."""
    groups: list[Any] = []
    for path in rule_files():
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": PROMETHEUS_RULE_NAME, "labels": PROMETHEUS_RULE_LABELS},
        "spec": {"groups": groups},
    }
    sources = ", ".join(f"rules/{path.name}" for path in rule_files())
    header = f"# Rendered by observability/build.py from {sources}. Do not edit.\n"
    body = yaml.dump(resource, Dumper=_BlockStyleDumper, sort_keys=False, width=10_000)
    return header + body


def render_dashboards() -> dict[Path, str]:
    """Every dashboard of ``dashboard_specs.DASHBOARDS`` as indented JSON, keyed by path."""
    return {
        DASHBOARDS_DIR / f"{uid}.json": json.dumps(spec(), indent=2) + "\n"
        for uid, spec in DASHBOARDS.items()
    }


def outputs() -> dict[Path, str]:
    """Every file this script owns, with the content it must have."""
    return {GENERATED_RULE: render_prometheus_rule(), **render_dashboards()}


def stale_outputs() -> list[Path]:
    """Outputs whose file differs from a fresh rendering, plus dashboards no spec produces."""
    expected = outputs()
    stale = [
        path
        for path, content in expected.items()
        if not path.exists() or path.read_text() != content
    ]
    orphans = [path for path in DASHBOARDS_DIR.glob("*.json") if path not in expected]
    return stale + orphans


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if an output is not up to date"
    )
    args = parser.parse_args()
    if args.check:
        stale = stale_outputs()
        for path in stale:
            print(f"stale: {path.relative_to(HERE.parent)}", file=sys.stderr)
        if stale:
            print("run: python observability/build.py", file=sys.stderr)
        return 1 if stale else 0
    for path in DASHBOARDS_DIR.glob("*.json"):
        path.unlink()
    for path, content in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
