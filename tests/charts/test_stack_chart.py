"""The umbrella chart (helm/greenlight-stack) rendered whole: its own templates, the operator
subchart and the released kube-prometheus-stack, Loki, Tempo, Alloy and blackbox exporter charts
(``helm dependency build`` from the chart mirror). The wiring between them is asserted on the
rendered objects, the way the components will read it."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from tests.charts.render import REPO, HelmError, by_kind, helm, one, render
from tests.charts.selection import admits_from_namespace, selects
from tests.charts.stack import STACK_NAMESPACE, STACK_RELEASE, StackRenders
from tests.support.query_grammars import Language, parse

ALERTMANAGER_FILE = REPO / "observability" / "alertmanager" / "alertmanager.yaml"
DASHBOARDS_DIR = REPO / "observability" / "dashboards"
PROM_INSTALL = REPO / "hack" / "prom" / "install.sh"
SECRETS_MOUNT = "/etc/alertmanager/secrets"
OPERATOR = STACK_RELEASE  # the operator subchart's fullname when the release is "greenlight"
# A log line as the operator writes it (telemetry contract: JSON with trace_id).
LOG_LINE = (
    '{"timestamp": "2025-01-01T00:00:00Z", "level": "INFO", "message": "decided", '
    '"workflow_id": "wf-1", "task_id": "t-1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", '
    '"span_id": "00f067aa0ba902b7"}'
)
JAEGER_PORTS = {6831, 6832, 14250, 14268}
# The session's first test builds the umbrella's dependencies and renders it: minutes when busy.
pytestmark = pytest.mark.timeout(900)


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, rendered {len(found)}"
    return found[0]


def namespace_of(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("namespace", STACK_NAMESPACE))


def datasources(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Grafana's provisioned datasources by uid, from the ConfigMaps its sidecar loads."""
    found: dict[str, dict[str, Any]] = {}
    for config_map in by_kind(objects, "ConfigMap"):
        if config_map["metadata"].get("labels", {}).get("grafana_datasource") != "1":
            continue
        for content in config_map["data"].values():
            for source in yaml.safe_load(content)["datasources"]:
                found[source["uid"]] = source
    return found


def tempo_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (config_map,) = [c for c in by_kind(objects, "ConfigMap") if "tempo.yaml" in c["data"]]
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["tempo.yaml"])
    return loaded


def loki_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (config_map,) = [
        c
        for c in by_kind(objects, "ConfigMap")
        if "config.yaml" in c["data"] and "schema_config" in c["data"]["config.yaml"]
    ]
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return loaded


def service_port(objects: list[dict[str, Any]], url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rendered Service and port a cluster-internal URL reaches (host = Service name)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").split(".")[0]
    service = named(objects, "Service", host)
    ports = [p for p in service["spec"]["ports"] if p["port"] == parts.port]
    assert ports, f"Service {host} has no port {parts.port}: {service['spec']['ports']}"
    return service, ports[0]


def workload_behind(objects: list[dict[str, Any]], service: dict[str, Any]) -> dict[str, Any]:
    """The one Deployment/StatefulSet/DaemonSet whose pods the Service selects."""
    selector = service["spec"]["selector"]
    found = [
        w
        for kind in ("Deployment", "StatefulSet", "DaemonSet")
        for w in by_kind(objects, kind)
        if selects({"matchLabels": selector}, w["spec"]["template"]["metadata"]["labels"])
        and namespace_of(w) == namespace_of(service)
    ]
    assert len(found) == 1, f"{service['metadata']['name']} selects {len(found)} workloads"
    return found[0]


def container_port(workload: dict[str, Any], target: int | str) -> int:
    for container in workload["spec"]["template"]["spec"]["containers"]:
        for port in container.get("ports", []):
            if target in (port["containerPort"], port.get("name")):
                return int(port["containerPort"])
    raise AssertionError(f"{workload['metadata']['name']} has no container port {target}")


def test_umbrella_lints_and_renders_every_component(
    stack_chart: Path, stack: list[dict[str, Any]]
) -> None:
    helm("lint", "--strict", str(stack_chart))
    assert named(stack, "StatefulSet", OPERATOR)
    assert one(stack, "Prometheus")
    assert one(stack, "Alertmanager")
    assert named(stack, "StatefulSet", "greenlight-loki")
    assert named(stack, "StatefulSet", "greenlight-tempo")
    assert named(stack, "DaemonSet", "greenlight-alloy")
    assert named(stack, "Deployment", "greenlight-blackbox")
    assert named(stack, "Deployment", f"{STACK_RELEASE}-grafana")


def test_prometheus_selects_the_operator_monitor_rules_probe_and_managed_services(
    stack: list[dict[str, Any]],
) -> None:
    prometheus = one(stack, "Prometheus")
    spec = prometheus["spec"]
    ours = {
        "ServiceMonitor": [OPERATOR, f"{STACK_RELEASE}-qdrant", f"{STACK_RELEASE}-redis"],
        "PrometheusRule": [
            r["metadata"]["name"]
            for r in by_kind(stack, "PrometheusRule")
            if r["metadata"]["labels"].get("app.kubernetes.io/part-of") == "greenlight"
        ],
        "Probe": [one(stack, "Probe")["metadata"]["name"]],
    }
    selectors = {
        "ServiceMonitor": ("serviceMonitorSelector", "serviceMonitorNamespaceSelector"),
        "PrometheusRule": ("ruleSelector", "ruleNamespaceSelector"),
        "Probe": ("probeSelector", "probeNamespaceSelector"),
    }
    assert len(ours["PrometheusRule"]) == len(
        list((REPO / "observability" / "rules").glob("*.yaml"))
    )
    for kind, names in ours.items():
        selector, namespace_selector = selectors[kind]
        for name in names:
            obj = named(stack, kind, name)
            assert selects(spec[selector], obj["metadata"]["labels"]), (kind, name)
            if spec.get(namespace_selector) is None:  # nil: the Prometheus's own namespace only
                assert namespace_of(obj) == namespace_of(prometheus), (kind, name)
            else:
                ns_labels = {"kubernetes.io/metadata.name": namespace_of(obj)}
                assert selects(spec[namespace_selector], ns_labels), (kind, name)


def test_operator_service_monitor_scrapes_the_operator_metrics_port(
    stack: list[dict[str, Any]],
) -> None:
    monitor = named(stack, "ServiceMonitor", OPERATOR)
    service = named(stack, "Service", OPERATOR)
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert namespace_of(service) in monitor["spec"]["namespaceSelector"]["matchNames"]
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    operator = workload_behind(stack, service)
    assert container_port(operator, port["targetPort"]) == 9090
    job_label = monitor["spec"]["jobLabel"]
    assert service["metadata"]["labels"][job_label] == "greenlight-operator"


@pytest.mark.parametrize("profile", ["defaults", "restricted-scrape"])
def test_operator_network_policy_admits_the_scrape_from_the_prometheus_namespace(
    stack_renders: StackRenders, profile: str
) -> None:
    objects = stack_renders(profile)
    policy = named(objects, "NetworkPolicy", OPERATOR)
    operator = named(objects, "StatefulSet", OPERATOR)
    assert selects(
        policy["spec"]["podSelector"], operator["spec"]["template"]["metadata"]["labels"]
    )
    prometheus = one(objects, "Prometheus")
    pod_labels = {"app.kubernetes.io/name": "prometheus", "prometheus": "greenlight-kps-prometheus"}
    rules = [
        rule
        for rule in policy["spec"]["ingress"]
        if any(p["port"] in (9090, "metrics") for p in rule.get("ports", []))
    ]
    assert rules, "no ingress rule for the metrics port"
    assert any(
        admits_from_namespace(rule, namespace_of(prometheus), pod_labels) for rule in rules
    ), rules
    # Open to every namespace by default; the restricted profile admits Prometheus's alone.
    admits_elsewhere = any(admits_from_namespace(rule, "elsewhere", pod_labels) for rule in rules)
    assert admits_elsewhere == (profile == "defaults")


def test_grafana_sidecar_loads_every_greenlight_dashboard(stack: list[dict[str, Any]]) -> None:
    grafana = named(stack, "Deployment", f"{STACK_RELEASE}-grafana")
    (sidecar,) = [
        c
        for c in grafana["spec"]["template"]["spec"]["containers"]
        if c["name"] == "grafana-sc-dashboard"
    ]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    loaded: set[str] = set()
    for config_map in by_kind(stack, "ConfigMap"):
        labels = config_map["metadata"].get("labels", {})
        if labels.get(env["LABEL"]) == env["LABEL_VALUE"] and (
            env["NAMESPACE"] == "ALL" or env["NAMESPACE"] == namespace_of(config_map)
        ):
            loaded.update(config_map["data"])
    assert {p.name for p in DASHBOARDS_DIR.glob("*.json")} <= loaded


def test_every_datasource_uid_a_dashboard_or_a_link_names_is_provisioned(
    stack: list[dict[str, Any]],
) -> None:
    sources = datasources(stack)
    assert {"prometheus", "loki", "tempo"} <= set(sources)
    types = {s["type"] for s in sources.values()}
    for path in DASHBOARDS_DIR.glob("*.json"):
        dashboard = json.loads(path.read_text())
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        for panel in dashboard["panels"]:
            for ref in [panel.get("datasource")] + [
                t.get("datasource") for t in panel.get("targets", [])
            ]:
                if not ref:
                    continue
                uid = ref["uid"]
                if uid.startswith("${"):
                    variable = variables[uid.strip("${}")]
                    assert variable["type"] == "datasource"
                    assert variable["query"] in types, (path.name, uid)
                else:
                    assert uid in sources, (path.name, uid)
    loki, tempo, prometheus = sources["loki"], sources["tempo"], sources["prometheus"]
    links = [f["datasourceUid"] for f in loki["jsonData"]["derivedFields"]]
    links += [
        tempo["jsonData"][key]["datasourceUid"]
        for key in ("tracesToLogsV2", "tracesToMetrics", "serviceMap", "lokiSearch")
    ]
    links += [d["datasourceUid"] for d in prometheus["jsonData"]["exemplarTraceIdDestinations"]]
    for uid in links:
        assert uid in sources, uid


def test_grafana_links_trace_ids_in_logs_to_tempo_and_traces_to_logs(
    stack: list[dict[str, Any]],
) -> None:
    sources = datasources(stack)
    (field,) = sources["loki"]["jsonData"]["derivedFields"]
    assert sources[field["datasourceUid"]]["type"] == "tempo"
    match = re.search(field["matcherRegex"], LOG_LINE)
    assert match is not None
    assert match.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"
    # `$$` is Grafana's provisioning escape for a literal `$`.
    assert field["url"] == "$${__value.raw}"
    to_logs = sources["tempo"]["jsonData"]["tracesToLogsV2"]
    assert sources[to_logs["datasourceUid"]]["type"] == "loki"
    assert "$${__trace.traceId}" in to_logs["query"]


def provisioned(value: str) -> str:
    """A datasource field as Grafana reads it: ``$$`` is its provisioning escape for ``$``."""
    return value.replace("$$", "$")


def test_every_log_and_trace_query_of_the_datasources_parses(
    stack: list[dict[str, Any]],
) -> None:
    sources = datasources(stack)
    to_logs = sources["tempo"]["jsonData"]["tracesToLogsV2"]
    queries: list[tuple[Language, str]] = [("logql", provisioned(to_logs["query"]))]
    verdicts = parse(queries)
    assert [v for v in verdicts if not v.ok] == []
    # A derived field's URL is the query the Tempo datasource runs: the trace id itself.
    (field,) = sources["loki"]["jsonData"]["derivedFields"]
    match = re.search(field["matcherRegex"], LOG_LINE)
    assert match is not None
    trace_query = provisioned(field["url"]).replace("${__value.raw}", match.group(1))
    assert re.fullmatch(r"[0-9a-f]{32}", trace_query)


def test_exemplars_link_to_the_trace_in_tempo(stack: list[dict[str, Any]]) -> None:
    sources = datasources(stack)
    (destination,) = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert sources[destination["datasourceUid"]]["type"] == "tempo"
    # The operator's exemplars carry the label trace_id (telemetry/metrics.py).
    assert destination["name"] == "trace_id"
    assert "exemplar-storage" in one(stack, "Prometheus")["spec"]["enableFeatures"]


def test_grafana_datasources_reach_the_services_the_charts_render(
    stack: list[dict[str, Any]],
) -> None:
    sources = datasources(stack)
    for uid, container_target in (("loki", 3100), ("tempo", 3200)):
        service, port = service_port(stack, sources[uid]["url"])
        workload = workload_behind(stack, service)
        assert container_port(workload, port["targetPort"]) == container_target, uid
    prometheus_url = urlsplit(sources["prometheus"]["url"])
    assert (prometheus_url.hostname or "").split(".")[0] == "greenlight-kps-prometheus"


def test_alloy_ships_pod_logs_to_the_loki_service_the_loki_chart_renders(
    stack: list[dict[str, Any]],
) -> None:
    alloy = named(stack, "DaemonSet", "greenlight-alloy")
    config_map = named(stack, "ConfigMap", "greenlight-alloy")
    config = config_map["data"]["config.alloy"]
    pushes = re.findall(r'url\s*=\s*"([^"]+)"', config)
    assert len(pushes) == 1
    assert urlsplit(pushes[0]).path == "/loki/api/v1/push"
    service, port = service_port(stack, pushes[0])
    loki = workload_behind(stack, service)
    assert loki["metadata"]["name"] == "greenlight-loki"
    assert (
        container_port(loki, port["targetPort"]) == loki_config(stack)["server"]["http_listen_port"]
    )
    volumes = {v["name"]: v for v in alloy["spec"]["template"]["spec"]["volumes"]}
    assert any(v.get("hostPath", {}).get("path") == "/var/log" for v in volumes.values())
    # No keep/drop rule: logs of every namespace (operator, agent, Qdrant, Redis) are shipped.
    assert not re.search(r'action\s*=\s*"(drop|keep)"', config)
    assert "stage.structured_metadata" in config


def test_operator_sends_traces_to_the_tempo_otlp_receiver(stack: list[dict[str, Any]]) -> None:
    operator = named(stack, "StatefulSet", OPERATOR)
    (container,) = [
        c for c in operator["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    service, port = service_port(stack, endpoint)
    tempo = workload_behind(stack, service)
    assert tempo["metadata"]["name"] == "greenlight-tempo"
    http = tempo_config(stack)["distributor"]["receivers"]["otlp"]["protocols"]["http"]
    assert int(http["endpoint"].rsplit(":", 1)[1]) == container_port(tempo, port["targetPort"])


def test_tempo_receives_otlp_only(stack: list[dict[str, Any]]) -> None:
    assert set(tempo_config(stack)["distributor"]["receivers"]) == {"otlp"}
    service = named(stack, "Service", "greenlight-tempo")
    ports = {p["port"] for p in service["spec"]["ports"]}
    assert not ports & JAEGER_PORTS, service["spec"]["ports"]
    assert not [p for p in service["spec"]["ports"] if "jaeger" in p["name"]]


def test_tempo_metrics_generator_writes_span_metrics_to_prometheus(
    stack: list[dict[str, Any]],
) -> None:
    config = tempo_config(stack)
    generator = config["metrics_generator"]
    (remote_write,) = generator["storage"]["remote_write"]
    assert urlsplit(remote_write["url"]).path == "/api/v1/write"
    service, _ = service_port(stack, remote_write["url"])
    prometheus = one(stack, "Prometheus")
    assert selects(
        {"matchLabels": service["spec"]["selector"]},
        {
            "app.kubernetes.io/name": "prometheus",
            "operator.prometheus.io/name": prometheus["metadata"]["name"],
        },
    )
    assert prometheus["spec"]["enableRemoteWriteReceiver"] is True
    processors = config["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert {"service-graphs", "span-metrics"} <= set(processors)
    tempo = datasources(stack)["tempo"]["jsonData"]
    for link in ("serviceMap", "tracesToMetrics"):
        assert datasources(stack)[tempo[link]["datasourceUid"]]["type"] == "prometheus"


def test_loki_applies_its_retention_with_the_compactor(stack: list[dict[str, Any]]) -> None:
    config = loki_config(stack)
    assert config["limits_config"]["retention_period"] == "744h"
    compactor = config["compactor"]
    assert compactor["retention_enabled"] is True
    assert compactor["delete_request_store"] == "filesystem"
    # The compactor works on the persistent volume (mounted at /var/loki).
    assert compactor["working_directory"].startswith(config["common"]["path_prefix"])


def test_vault_is_probed_through_the_blackbox_exporter(stack: list[dict[str, Any]]) -> None:
    probe = one(stack, "Probe")
    assert probe["spec"]["jobName"] == "blackbox-vault"
    (target,) = probe["spec"]["targets"]["staticConfig"]["static"]
    assert "/v1/sys/health" in target
    service, port = service_port(stack, f"http://{probe['spec']['prober']['url']}")
    exporter = workload_behind(stack, service)
    assert exporter["metadata"]["name"] == "greenlight-blackbox"
    assert container_port(exporter, port["targetPort"]) == 9115


def test_managed_services_are_scraped_under_their_own_job(stack: list[dict[str, Any]]) -> None:
    for service in ("qdrant", "redis"):
        monitor = named(stack, "ServiceMonitor", f"{STACK_RELEASE}-{service}")
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert {"action": "replace", "targetLabel": "job", "replacement": service} in endpoint[
            "relabelings"
        ]


@pytest.fixture(scope="module")
def amtool() -> Path:
    result = subprocess.run(["bash", str(PROM_INSTALL)], check=True, capture_output=True, text=True)
    return Path(result.stdout.strip().splitlines()[-1]) / "amtool"


def test_alertmanager_reads_the_shipped_config_secret_and_it_passes_amtool(
    stack: list[dict[str, Any]], amtool: Path, tmp_path: Path
) -> None:
    alertmanager = one(stack, "Alertmanager")
    secret = named(stack, "Secret", alertmanager["spec"]["configSecret"])
    assert namespace_of(secret) == namespace_of(alertmanager)
    shipped = base64.b64decode(secret["data"]["alertmanager.yaml"])
    assert shipped == ALERTMANAGER_FILE.read_bytes()
    config = tmp_path / "alertmanager.yaml"
    config.write_bytes(shipped)
    result = subprocess.run(
        [str(amtool), "check-config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_mounts_the_secret_every_credential_file_is_read_from(
    stack: list[dict[str, Any]],
) -> None:
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    mounted = {f"{SECRETS_MOUNT}/{name}/" for name in one(stack, "Alertmanager")["spec"]["secrets"]}

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


def test_diverging_alertmanager_secret_names_are_refused(stack_chart: Path) -> None:
    with pytest.raises(HelmError) as refused:
        render(
            {
                "kube-prometheus-stack": {
                    "alertmanager": {"alertmanagerSpec": {"configSecret": "x"}}
                }
            },
            chart=stack_chart,
        )
    assert "alerting.configSecretName" in refused.value.stderr


def test_watchdog_is_rendered_and_routed_to_the_heartbeat(stack: list[dict[str, Any]]) -> None:
    alerts = {
        rule.get("alert")
        for obj in by_kind(stack, "PrometheusRule")
        for group in obj["spec"]["groups"]
        for rule in group["rules"]
    }
    assert "Watchdog" in alerts
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    assert any('alertname = "Watchdog"' in r.get("matchers", []) for r in config["route"]["routes"])
