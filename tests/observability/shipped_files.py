"""Where the files Greenlight ships for alerting and dashboards live in the repository."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "observability"
RULES_DIR = OBSERVABILITY / "rules"
RULE_TESTS_DIR = RULES_DIR / "tests"
ALERTMANAGER_CONFIG = OBSERVABILITY / "alertmanager" / "alertmanager.yaml"
DASHBOARDS_DIR = OBSERVABILITY / "dashboards"
RUNBOOKS = REPO / "docs" / "runbooks.md"
PROM_INSTALL = REPO / "hack" / "prom" / "install.sh"


def rule_files() -> list[Path]:
    """The shipped rule files (the promtool test files live in rules/tests/)."""
    return sorted(RULES_DIR.glob("*.yaml"))
