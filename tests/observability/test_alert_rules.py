"""The shipped Prometheus rules: valid, unit-tested, complete, and documented."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.observability.alerting_contract import (
    ALERT_SEVERITIES,
    CONTRACT_METRICS,
    RUNBOOK_BASE,
    is_known_metric,
)
from tests.observability.promql_names import metric_names
from tests.observability.shipped_files import RULE_TESTS_DIR, RULES_DIR, RUNBOOKS, rule_files

DEBIAN_PROMTOOL = Path("/usr/bin/promtool")
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container"})


def alerting_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def rule_tests() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(RULE_TESTS_DIR.glob("*_test.yaml")):
        for test in yaml.safe_load(path.read_text())["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub generates for the headings of ``markdown``."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_rule_files_pass_promtool_check(promtool: Path) -> None:
    result = subprocess.run(
        [str(promtool), "check", "rules", *map(str, rule_files())],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = [int(count) for count in re.findall(r"SUCCESS: (\d+) rules found", result.stdout)]
    assert len(found) == len(rule_files())
    assert sum(found) == len(ALERT_SEVERITIES)


@pytest.mark.parametrize("which", ["pinned promtool (Prometheus 3)", "Debian promtool"])
def test_promtool_unit_tests_pass_on_both_prometheus_majors(promtool: Path, which: str) -> None:
    tool = promtool if which.startswith("pinned") else DEBIAN_PROMTOOL
    test_files = sorted(RULE_TESTS_DIR.glob("*_test.yaml"))
    assert len(test_files) == len(rule_files())
    result = subprocess.run(
        [str(tool), "test", "rules", *map(str, test_files)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fail_when_an_expected_annotation_is_wrong(
    promtool: Path, tmp_path: Path
) -> None:
    shutil.copytree(RULES_DIR, tmp_path / "rules")
    test_file = tmp_path / "rules" / "tests" / "operator_test.yaml"
    text = test_file.read_text()
    test_file.write_text(text.replace("(target 10.0.0.7:9090)", "(target 10.0.0.8:9090)"))
    result = subprocess.run(
        [str(promtool), "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "GreenlightOperatorDown" in result.stdout + result.stderr


def test_every_contract_alert_is_defined_once_with_its_severity() -> None:
    rules = alerting_rules()
    names = [rule["alert"] for rule in rules]
    assert sorted(names) == sorted(ALERT_SEVERITIES)
    assert {rule["alert"]: rule["labels"]["severity"] for rule in rules} == ALERT_SEVERITIES


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_summary_description_and_its_runbook_url(rule: dict[str, Any]) -> None:
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert len(annotations["description"]) > len(annotations["summary"])
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}#{rule['alert'].lower()}"


def test_every_runbook_url_anchor_exists_in_the_runbooks_doc() -> None:
    anchors = github_anchors(RUNBOOKS.read_text())
    missing = [rule["alert"] for rule in alerting_rules() if rule["alert"].lower() not in anchors]
    assert missing == []


@pytest.mark.parametrize("alert", sorted(ALERT_SEVERITIES))
def test_alert_has_a_firing_and_a_not_firing_unit_test(alert: str) -> None:
    cases = [case for case in rule_tests() if case["alertname"] == alert]
    firing = [case for case in cases if case["exp_alerts"]]
    silent = [case for case in cases if not case["exp_alerts"]]
    assert firing, f"no promtool case where {alert} fires"
    assert silent, f"no promtool case where {alert} stays silent"
    for case in firing:
        for expected in case["exp_alerts"]:
            assert expected["exp_labels"]["severity"] == ALERT_SEVERITIES[alert]
            assert set(expected["exp_annotations"]) == {"summary", "description", "runbook_url"}


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule["alert"])
def test_alert_expression_uses_contract_metrics_and_labels(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    assert [name for name in names if not is_known_metric(name)] == []
    for metric, matchers in re.findall(r"(\w+)\{([^}]*)\}", rule["expr"]):
        if metric not in CONTRACT_METRICS:
            continue
        used = set(re.findall(r"(\w+)\s*[=!]~?", matchers))
        assert used <= CONTRACT_METRICS[metric].labels | TARGET_LABELS, (metric, used)
