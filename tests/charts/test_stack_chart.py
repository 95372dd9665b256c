"""The umbrella chart (helm/greenlight-stack): what is ours, rendered by the real helm.

Its remote dependencies cannot be downloaded here; these tests render the umbrella's own
templates with the operator subchart (``local_umbrella``) and check the values that wire the
third-party charts together against the files and contracts they must match.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from render import (
    REPO,
    UMBRELLA_CHART,
    HelmError,
    by_kind,
    helm,
    local_umbrella,
    one,
    render,
)

RELEASE = "observatory"
ALERTMANAGER_FILE = REPO / "observability" / "alertmanager" / "alertmanager.yaml"
SECRETS_MOUNT = "/etc/alertmanager/secrets"
# A log line as the operator writes it (telemetry contract: JSON with trace_id).
LOG_LINE = (
    '{"timestamp": "2025-01-01T00:00:00Z", "level": "INFO", "message": "decided", '
    '"workflow_id": "wf-1", "task_id": "t-1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", '
    '"span_id": "00f067aa0ba902b7"}'
)


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return local_umbrella(tmp_path_factory.mktemp("umbrella"))


@pytest.fixture(scope="module")
def objects(chart: Path) -> list[dict[str, Any]]:
    return render({}, chart=chart, release=RELEASE)


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((UMBRELLA_CHART / "values.yaml").read_text())
    return loaded


def datasource(values: dict[str, Any], kind: str) -> dict[str, Any]:
    grafana = values["kube-prometheus-stack"]["grafana"]
    (found,) = [d for d in grafana["additionalDataSources"] if d["type"] == kind]
    return found


def test_dependencies_are_pinned_to_exact_versions_from_their_repositories() -> None:
    metadata = yaml.safe_load((UMBRELLA_CHART / "Chart.yaml").read_text())
    repositories = {dep["name"]: dep["repository"] for dep in metadata["dependencies"]}
    assert repositories == {
        "greenlight": "file://../greenlight",
        "kube-prometheus-stack": "https://prometheus-community.github.io/helm-charts",
        "loki": "https://grafana-community.github.io/helm-charts",
        "tempo": "https://grafana-community.github.io/helm-charts",
        "alloy": "https://grafana.github.io/helm-charts",
        "prometheus-blackbox-exporter": "https://prometheus-community.github.io/helm-charts",
    }
    for dep in metadata["dependencies"]:
        assert re.fullmatch(r"\d+\.\d+\.\d+", dep["version"]), dep
    operator = yaml.safe_load((REPO / "helm" / "greenlight" / "Chart.yaml").read_text())
    (pinned,) = [d["version"] for d in metadata["dependencies"] if d["name"] == "greenlight"]
    assert pinned == operator["version"]


def test_umbrella_lints_and_renders_the_operator_with_monitoring(
    chart: Path, objects: list[dict[str, Any]]
) -> None:
    helm("lint", "--strict", str(chart))
    assert one(objects, "StatefulSet")["metadata"]["name"] == f"{RELEASE}-greenlight"
    assert by_kind(objects, "PrometheusRule")
    assert [
        c for c in by_kind(objects, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]


def test_every_rule_monitor_and_probe_carries_the_release_label(
    objects: list[dict[str, Any]],
) -> None:
    monitoring = [
        o
        for o in objects
        if o["kind"] in {"PrometheusRule", "ServiceMonitor", "Probe", "PodMonitor"}
    ]
    assert {o["kind"] for o in monitoring} == {"PrometheusRule", "ServiceMonitor", "Probe"}
    for obj in monitoring:
        assert obj["metadata"]["labels"]["release"] == RELEASE, obj["metadata"]["name"]


def test_vault_is_probed_through_the_blackbox_exporter(
    objects: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    probe = one(objects, "Probe")
    assert probe["spec"]["jobName"] == "blackbox-vault"
    (target,) = probe["spec"]["targets"]["staticConfig"]["static"]
    assert "/v1/sys/health" in target
    blackbox = values["prometheus-blackbox-exporter"]["fullnameOverride"]
    assert probe["spec"]["prober"]["url"].startswith(f"{blackbox}.")
    assert probe["spec"]["prober"]["url"].endswith(":9115")


def test_managed_services_are_scraped_under_their_own_job(objects: list[dict[str, Any]]) -> None:
    monitors = {m["metadata"]["name"]: m for m in by_kind(objects, "ServiceMonitor")}
    for service in ("qdrant", "redis"):
        (endpoint,) = monitors[f"{RELEASE}-{service}"]["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert {"action": "replace", "targetLabel": "job", "replacement": service} in endpoint[
            "relabelings"
        ]


def test_alertmanager_routing_is_the_observability_file_byte_for_byte(
    objects: list[dict[str, Any]], values: dict[str, Any]
) -> None:
    spec = values["kube-prometheus-stack"]["alertmanager"]["alertmanagerSpec"]
    assert spec["useExistingSecret"] is True
    (secret,) = [
        s for s in by_kind(objects, "Secret") if s["metadata"]["name"] == spec["configSecret"]
    ]
    shipped = base64.b64decode(secret["data"]["alertmanager.yaml"])
    assert shipped == ALERTMANAGER_FILE.read_bytes()


def test_alertmanager_reads_every_credential_from_a_mounted_secret(
    values: dict[str, Any],
) -> None:
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    spec = values["kube-prometheus-stack"]["alertmanager"]["alertmanagerSpec"]
    mounted = {f"{SECRETS_MOUNT}/{name}/" for name in spec["secrets"]}

    def credential_files(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [v for k, v in node.items() if k.endswith("_file") and isinstance(v, str)]
            return found + [f for v in node.values() for f in credential_files(v)]
        if isinstance(node, list):
            return [f for item in node for f in credential_files(item)]
        return []

    files = credential_files(config)
    assert any("routing_key_file" in str(r) for r in config["receivers"]), "PagerDuty key by file"
    assert files
    for path in files:
        assert any(path.startswith(prefix) for prefix in mounted), path
    assert values["alerting"]["credentialsSecretName"] in spec["secrets"]


def test_critical_pages_pagerduty_and_slack_warning_goes_to_slack() -> None:
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    routes = {tuple(r.get("matchers", [])): r["receiver"] for r in config["route"]["routes"]}
    critical = receivers[routes[('severity = "critical"',)]]
    assert critical["pagerduty_configs"]
    assert critical["slack_configs"]
    warning = receivers[routes[('severity = "warning"',)]]
    assert warning["slack_configs"]
    assert "pagerduty_configs" not in warning


def test_diverging_alertmanager_secret_names_are_refused(chart: Path) -> None:
    with pytest.raises(HelmError) as refused:
        render(
            {
                "kube-prometheus-stack": {
                    "alertmanager": {"alertmanagerSpec": {"configSecret": "x"}}
                }
            },
            chart=chart,
        )
    assert "alerting.configSecretName" in refused.value.stderr


def test_watchdog_stays_enabled_in_the_default_rules(values: dict[str, Any]) -> None:
    rules = values["kube-prometheus-stack"]["defaultRules"]
    assert rules["create"] is True
    assert rules["rules"]["general"] is True
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    assert any('alertname = "Watchdog"' in r.get("matchers", []) for r in config["route"]["routes"])


def test_grafana_links_trace_ids_in_logs_to_tempo_and_traces_to_logs(
    values: dict[str, Any],
) -> None:
    loki, tempo = datasource(values, "loki"), datasource(values, "tempo")
    (field,) = loki["jsonData"]["derivedFields"]
    assert field["datasourceUid"] == tempo["uid"]
    match = re.search(field["matcherRegex"], LOG_LINE)
    assert match is not None
    assert match.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"
    # `$$` is Grafana's provisioning escape for a literal `$`.
    assert field["url"] == "$${__value.raw}"
    to_logs = tempo["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == loki["uid"]
    assert "$${__trace.traceId}" in to_logs["query"]


def test_datasources_alloy_and_operator_point_at_the_stack_services(
    values: dict[str, Any],
) -> None:
    loki_service = values["loki"]["fullnameOverride"]
    tempo_service = values["tempo"]["fullnameOverride"]
    assert datasource(values, "loki")["url"] == f"http://{loki_service}:3100"
    assert datasource(values, "tempo")["url"] == f"http://{tempo_service}:3200"
    assert values["greenlight"]["otel"]["endpoint"] == f"http://{tempo_service}:4318"
    assert values["tempo"]["tempo"]["receivers"]["otlp"]["protocols"]["http"]
    assert values["loki"]["deploymentMode"] == "Monolithic"


def test_alloy_ships_every_pod_log_to_loki(values: dict[str, Any]) -> None:
    alloy = values["alloy"]
    config = alloy["alloy"]["configMap"]["content"]
    pushes = re.findall(r'url\s*=\s*"([^"]+)"', config)
    assert pushes == [f"http://{values['loki']['fullnameOverride']}:3100/loki/api/v1/push"]
    assert alloy["controller"]["type"] == "daemonset"
    assert alloy["alloy"]["mounts"]["varlog"] is True
    # No keep/drop rule: logs of every namespace (operator, agent, Qdrant, Redis) are shipped.
    assert not re.search(r'action\s*=\s*"(drop|keep)"', config)
    assert "stage.structured_metadata" in config
