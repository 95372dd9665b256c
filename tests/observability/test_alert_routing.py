"""The shipped Alertmanager configuration: valid, routes by severity, holds no secret."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.observability.alerting_contract import ALERT_SEVERITIES
from tests.observability.shipped_files import ALERTMANAGER_CONFIG

SECRETS_DIR = "/etc/alertmanager/secrets/greenlight-alerting/"
RECEIVER_BY_SEVERITY = {"critical": "pagerduty-and-slack", "warning": "slack"}


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    return loaded


def receiver(name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [item for item in config()["receivers"] if item["name"] == name]
    assert len(found) == 1, f"receiver {name} defined {len(found)} times"
    return found[0]


def routes_test(
    amtool: Path, labels: dict[str, str], expected: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(amtool),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"--verify.receivers={expected}",
            *(f"{key}={value}" for key, value in labels.items()),
        ],
        capture_output=True,
        text=True,
    )


def test_config_passes_amtool_check(amtool: Path) -> None:
    result = subprocess.run(
        [str(amtool), "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("alert", sorted(ALERT_SEVERITIES))
def test_greenlight_alert_routes_to_the_receiver_of_its_severity(amtool: Path, alert: str) -> None:
    severity = ALERT_SEVERITIES[alert]
    labels = {"alertname": alert, "severity": severity, "namespace": "greenlight"}
    result = routes_test(amtool, labels, RECEIVER_BY_SEVERITY[severity])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"alertname": "Watchdog", "severity": "none"}, "heartbeat"),
        ({"alertname": "InfoInhibitor", "severity": "none"}, "null"),
        ({"alertname": "KubeletTooManyPods", "severity": "info"}, "null"),
        ({"alertname": "KubePodCrashLooping", "severity": "warning"}, "slack"),
        ({"alertname": "KubeAPIDown", "severity": "critical"}, "pagerduty-and-slack"),
        ({"alertname": "SomethingWithoutSeverity"}, "slack"),
    ],
)
def test_other_alerts_route_to_heartbeat_null_or_default(
    amtool: Path, labels: dict[str, str], expected: str
) -> None:
    result = routes_test(amtool, labels, expected)
    assert result.returncode == 0, result.stdout + result.stderr


def test_routes_test_fails_for_a_wrong_receiver(amtool: Path) -> None:
    labels = {"alertname": "GreenlightTaskStuck", "severity": "warning"}
    assert routes_test(amtool, labels, "pagerduty-and-slack").returncode != 0


def test_critical_receiver_pages_pagerduty_and_posts_to_slack() -> None:
    critical = receiver("pagerduty-and-slack")
    assert len(critical["pagerduty_configs"]) == 1
    assert len(critical["slack_configs"]) == 1
    assert critical["slack_configs"] == receiver("slack")["slack_configs"]


def test_warning_receiver_only_posts_to_slack() -> None:
    warning = receiver("slack")
    assert set(warning) == {"name", "slack_configs"}


def test_credentials_are_read_from_mounted_secret_files() -> None:
    pagerduty = receiver("pagerduty-and-slack")["pagerduty_configs"][0]
    assert pagerduty["routing_key_file"].startswith(SECRETS_DIR)
    assert config()["global"]["slack_api_url_file"].startswith(SECRETS_DIR)
    text = ALERTMANAGER_CONFIG.read_text()
    for inline_secret in ("routing_key:", "service_key:", "api_url:", "hooks.slack.com"):
        assert inline_secret not in text


def test_critical_alert_inhibits_the_warning_of_the_same_name() -> None:
    (rule,) = config()["inhibit_rules"]
    assert rule["source_matchers"] == ['severity = "critical"']
    assert rule["target_matchers"] == ['severity = "warning"']
    assert "alertname" in rule["equal"]


def test_alerts_are_grouped_by_alertname() -> None:
    assert "alertname" in config()["route"]["group_by"]
