"""What GitOps applies: the rendered PrometheusRule and dashboards match their sources, and
``kubectl kustomize observability`` yields the resources the monitoring stack picks up."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from tests.observability.shipped_files import (
    ALERTMANAGER_CONFIG,
    DASHBOARDS_DIR,
    OBSERVABILITY,
    REPO,
    rule_files,
)

KUBECTL = Path(sys.executable).parent / "kubectl"
BUILD = OBSERVABILITY / "build.py"


def run_build(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, cwd=REPO
    )


def kustomized() -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(OBSERVABILITY)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_rendered_outputs_are_up_to_date_with_their_sources() -> None:
    result = run_build(BUILD, "--check")
    assert result.returncode == 0, result.stderr


def test_check_reports_a_rule_edit_that_was_not_rendered(tmp_path: Path) -> None:
    copy = tmp_path / "observability"
    shutil.copytree(OBSERVABILITY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    rule_file = copy / "rules" / "operator.yaml"
    rule_file.write_text(rule_file.read_text().replace("for: 5m", "for: 10m", 1))
    result = run_build(copy / "build.py", "--check")
    assert result.returncode == 1
    assert "stale: observability/generated/prometheusrule.yaml" in result.stderr
    assert run_build(copy / "build.py").returncode == 0
    assert run_build(copy / "build.py", "--check").returncode == 0


def test_prometheus_rule_holds_exactly_the_groups_of_the_rule_files() -> None:
    (rule,) = [doc for doc in kustomized() if doc["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    expected = [
        group for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == expected


def test_every_dashboard_becomes_a_grafana_sidecar_config_map() -> None:
    config_maps = {
        doc["metadata"]["name"]: doc for doc in kustomized() if doc["kind"] == "ConfigMap"
    }
    dashboards = sorted(DASHBOARDS_DIR.glob("*.json"))
    assert len(config_maps) == len(dashboards)
    for path in dashboards:
        name = path.stem.replace("greenlight-", "greenlight-dashboard-", 1)
        config_map = config_maps[name]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text())


def test_alertmanager_config_is_bundled_unchanged_for_config_secret() -> None:
    (secret,) = [doc for doc in kustomized() if doc["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "greenlight-alertmanager-config"
    bundled = base64.b64decode(secret["data"]["alertmanager.yaml"]).decode()
    assert bundled == ALERTMANAGER_CONFIG.read_text()
