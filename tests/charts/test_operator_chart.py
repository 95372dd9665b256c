"""The operator chart (helm/greenlight) rendered by the real helm for every values profile."""

from __future__ import annotations

import base64
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tests.charts.render import (
    NAMESPACE,
    OPERATOR_CHART,
    REPO,
    HelmError,
    by_kind,
    helm,
    one,
    render,
)

PROFILES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "monitoring": {"monitoring": {"enabled": True, "labels": {"release": "{{ .Release.Name }}"}}},
    "slack": {
        "slack": {
            "existingSecret": "greenlight-slack",
            "defaultChannel": "C0123456",
            "userMap": {"U0123ABC": "alice@example.com"},
            "ingress": {"enabled": True, "host": "greenlight.example.com"},
        }
    },
    "slack-socket": {"slack": {"existingSecret": "greenlight-slack", "mode": "socket"}},
    "cert-manager": {"certManager": {"enabled": True}},
    "namespace-scoped": {"watchNamespaces": ["team-a", "team-b"]},
}

# The operator's permissions from the runtime contract, cluster-wide, webhooks managed by the chart.
CONTRACT_RULES = (
    {
        ("greenlight.dev", "approvalrequests", verb)
        for verb in ("get", "list", "watch", "patch", "update")
    }
    | {("greenlight.dev", "approvalrequests/status", verb) for verb in ("get", "patch", "update")}
    | {
        ("", "events", "create"),
        ("", "events", "patch"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ("authentication.k8s.io", "selfsubjectreviews", "create"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "get"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    }
    | {
        # Admission judges every create against the approval policies (docs/policy.md).
        ("greenlight.dev", resource, verb)
        for resource in ("clusterapprovalpolicies", "approvalpolicies")
        for verb in ("get", "list", "watch")
    }
    | {
        ("kopf.dev", resource, verb)
        for resource in ("clusterkopfpeerings", "kopfpeerings")
        for verb in ("get", "list", "watch", "patch")
    }
)


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    container: dict[str, Any]
    (container,) = pod["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def named(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (found,) = [o for o in by_kind(objects, kind) if o["metadata"]["name"].endswith(suffix)]
    return found


@pytest.fixture(scope="module")
def defaults() -> list[dict[str, Any]]:
    return render({})


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_chart_lints_and_renders_with_profile(profile: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(PROFILES[profile]))
    helm("lint", "--strict", str(OPERATOR_CHART), "-f", str(values))
    objects = render(PROFILES[profile])
    assert one(objects, "StatefulSet")["spec"]["replicas"] == 2
    assert all(o["metadata"].get("name") for o in objects)


def test_operator_runs_non_root_on_a_read_only_root_filesystem(
    defaults: list[dict[str, Any]],
) -> None:
    pod = one(defaults, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(defaults)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["args"] == ["operator"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts


def test_probes_ask_kopf_healthz_on_the_health_port(defaults: list[dict[str, Any]]) -> None:
    container = operator_container(defaults)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == int(env_of(container)["GREENLIGHT_HEALTH_PORT"]["value"]) == 8080
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_two_replicas_take_distinct_peering_priorities_from_their_ordinals(
    defaults: list[dict[str, Any]],
) -> None:
    statefulset = one(defaults, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 2
    priority = env_of(operator_container(defaults))["GREENLIGHT_PRIORITY"]
    # A StatefulSet labels pod N with apps.kubernetes.io/pod-index=N: distinct by construction.
    assert priority["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    peering = one(defaults, "ClusterKopfPeering")
    assert (
        env_of(operator_container(defaults))["GREENLIGHT_PEERING"]["value"]
        == (peering["metadata"]["name"])
    )
    pdb = one(defaults, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == statefulset["spec"]["selector"]


def test_audit_key_is_generated_once_and_mounted_for_the_operator(
    defaults: list[dict[str, Any]],
) -> None:
    key = next(s for s in by_kind(defaults, "Secret") if "audit.key" in s["data"])
    assert len(base64.b64decode(key["data"]["audit.key"])) == 64
    assert key["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    container = one(defaults, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GREENLIGHT_AUDIT_KEY_FILE"] == "/etc/greenlight/audit-key/audit.key"
    assert env["GREENLIGHT_AUDIT_FILE"] == "/var/lib/greenlight/audit/audit-$(POD_NAME).jsonl"
    with_existing = render({"audit": {"keySecret": "my-audit-key"}})
    assert not [s for s in by_kind(with_existing, "Secret") if "audit.key" in s["data"]]


def test_single_replica_has_no_disruption_budget() -> None:
    assert by_kind(render({"replicaCount": 1}), "PodDisruptionBudget") == []


def test_webhooks_fail_closed_and_trust_the_ca_that_signed_the_serving_cert(
    defaults: list[dict[str, Any]],
) -> None:
    secret = next(s for s in by_kind(defaults, "Secret") if "tls.crt" in s["data"])
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    ca = x509.load_pem_x509_certificate(ca_pem)
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    public_key = ca.public_key()
    # helm's genCA makes an RSA CA; the signature check proves the caBundle trusts the cert.
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert serving.signature_hash_algorithm is not None
    public_key.verify(
        serving.signature,
        serving.tbs_certificate_bytes,
        padding.PKCS1v15(),
        serving.signature_hash_algorithm,
    )
    service = one(defaults, "Service")["metadata"]["name"]
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{service}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)

    expected = {
        "MutatingWebhookConfiguration": [
            ("greenlight-admission-mutate", ["approvalrequests"], ["CREATE", "UPDATE"]),
        ],
        "ValidatingWebhookConfiguration": [
            ("greenlight-admission-validate", ["approvalrequests"], ["CREATE", "UPDATE"]),
            ("greenlight-admission-status", ["approvalrequests/status"], ["UPDATE"]),
            ("greenlight-admission-delete", ["approvalrequests"], ["DELETE"]),
            (
                "greenlight-policy-validate-cluster",
                ["clusterapprovalpolicies"],
                ["CREATE", "UPDATE"],
            ),
            ("greenlight-policy-validate", ["approvalpolicies"], ["CREATE", "UPDATE"]),
        ],
    }
    # As the admission handlers declare them (`side_effects=` in adapters/admission.py).
    # Refusals are audited (not on a dry run); the delete webhook only notes who asked.
    side_effects = {
        "greenlight-admission-mutate": "NoneOnDryRun",
        "greenlight-admission-validate": "NoneOnDryRun",
        "greenlight-admission-status": "NoneOnDryRun",
        "greenlight-admission-delete": "None",
        "greenlight-policy-validate-cluster": "None",
        "greenlight-policy-validate": "None",
    }
    operator = f"system:serviceaccount:{NAMESPACE}:greenlight"
    for kind, hooks in expected.items():
        webhooks = one(defaults, kind)["webhooks"]
        assert [w["name"] for w in webhooks] == [f"{h}.greenlight.dev" for h, _, _ in hooks]
        for webhook, (handler, resources, operations) in zip(webhooks, hooks, strict=True):
            assert webhook["failurePolicy"] == "Fail"
            assert webhook["sideEffects"] == side_effects[handler]
            assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca_pem
            assert webhook["clientConfig"]["service"] == {
                "name": service,
                "namespace": NAMESPACE,
                "path": f"/{handler}",
                "port": 443,
            }
            (rule,) = webhook["rules"]
            assert rule["operations"] == operations
            assert rule["resources"] == resources
            assert rule["apiGroups"] == ["greenlight.dev"]
            assert rule["apiVersions"] == ["v1alpha1"]
            # The operator's own writes skip admission; everyone else's are checked.
            assert webhook["matchConditions"] == [
                {
                    "name": "not-the-operator",
                    "expression": f"request.userInfo.username != '{operator}'",
                }
            ]


def test_service_routes_443_to_the_webhook_port_and_exposes_metrics(
    defaults: list[dict[str, Any]],
) -> None:
    ports = {p["name"]: p for p in one(defaults, "Service")["spec"]["ports"]}
    assert (ports["webhook"]["port"], ports["webhook"]["targetPort"]) == (443, "webhook")
    assert ports["metrics"]["port"] == 9090
    assert "slack" not in ports
    container = operator_container(defaults)
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["webhook"] == 9443
    env = env_of(container)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["GREENLIGHT_WEBHOOK_CERT_FILE"]["value"] == f"{mounts['webhook-tls']}/tls.crt"
    assert env["GREENLIGHT_WEBHOOK_KEY_FILE"]["value"] == f"{mounts['webhook-tls']}/tls.key"
    assert env["GREENLIGHT_WEBHOOK_MANAGE"]["value"] == "false"


def test_cert_manager_issues_the_serving_cert_and_injects_the_ca() -> None:
    objects = render(PROFILES["cert-manager"])
    certificate = one(objects, "Certificate")
    assert one(objects, "Issuer")["spec"] == {"selfSigned": {}}
    volumes = {
        v["name"]: v for v in one(objects, "StatefulSet")["spec"]["template"]["spec"]["volumes"]
    }
    assert certificate["spec"]["secretName"] == volumes["webhook-tls"]["secret"]["secretName"]
    assert [s for s in by_kind(objects, "Secret") if "tls.crt" in s.get("data", {})] == []
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        configuration = one(objects, kind)
        assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/{certificate['metadata']['name']}"
        )
        assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]


def test_audit_log_lives_on_a_kept_persistent_volume_claim(
    defaults: list[dict[str, Any]],
) -> None:
    claim = one(defaults, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = one(defaults, "StatefulSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["audit"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    container = operator_container(defaults)
    audit_file = Path(env_of(container)["GREENLIGHT_AUDIT_FILE"]["value"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert audit_file.parent == Path(mounts["audit"])
    # One ReadWriteOnce volume attaches to one node: every replica must be scheduled there.
    assert pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


def test_shared_audit_volume_lets_replicas_spread_over_nodes() -> None:
    objects = render({"audit": {"persistence": {"accessMode": "ReadWriteMany"}}})
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert "podAffinity" not in pod["affinity"]
    assert pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]


def test_network_policy_admits_only_the_operator_ports(defaults: list[dict[str, Any]]) -> None:
    policy = one(defaults, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == (one(defaults, "StatefulSet")["spec"]["selector"]["matchLabels"])
    )
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {9443, 9090, 8080}
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 443, 6443} <= egress_ports


def test_operator_rbac_is_exactly_the_contract(defaults: list[dict[str, Any]]) -> None:
    (role,) = [
        r for r in by_kind(defaults, "ClusterRole") if r["metadata"]["name"].endswith("-operator")
    ]
    assert rule_triples(role["rules"]) == CONTRACT_RULES
    binding = one(defaults, "ClusterRoleBinding")
    service_account = one(defaults, "ServiceAccount")["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE}
    ]
    pod = one(defaults, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == service_account
    assert [r["metadata"]["name"] for r in by_kind(defaults, "Role")] == ["greenlight-audit-anchor"]


def test_operator_may_write_only_its_own_audit_anchors(defaults: list[dict[str, Any]]) -> None:
    (role,) = by_kind(defaults, "Role")
    (binding,) = by_kind(defaults, "RoleBinding")
    anchors = ["greenlight-audit-anchor-greenlight-0", "greenlight-audit-anchor-greenlight-1"]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": anchors,
            "verbs": ["get", "patch"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["greenlight-receipt-keys"],
            "verbs": ["get", "patch"],
        },
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == one(defaults, "ServiceAccount")["metadata"]["name"]
    env = env_of(operator_container(defaults))
    assert env["GREENLIGHT_AUDIT_ANCHOR_NAME"]["value"] == "greenlight-audit-anchor-$(POD_NAME)"
    namespace = env["GREENLIGHT_AUDIT_ANCHOR_NAMESPACE"]["valueFrom"]["fieldRef"]
    assert namespace["fieldPath"] == "metadata.namespace"


def test_operator_that_manages_its_webhooks_may_write_webhook_configurations() -> None:
    objects = render({"webhook": {"manage": True}})
    (role,) = [
        r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("-operator")
    ]
    extra = rule_triples(role["rules"]) - CONTRACT_RULES
    assert {resource for _, resource, _ in extra} == {
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    }
    assert by_kind(objects, "MutatingWebhookConfiguration") == []
    assert by_kind(objects, "ValidatingWebhookConfiguration") == []
    assert env_of(operator_container(objects))["GREENLIGHT_WEBHOOK_MANAGE"]["value"] == "true"
    named = [r for r in role["rules"] if "admissionregistration.k8s.io" in r["apiGroups"]]
    assert [(r.get("resourceNames"), sorted(r["verbs"])) for r in named] == [
        (None, ["create"]),  # create cannot be limited to a name
        (["greenlight.dev"], ["get", "update"]),  # no other webhook can be read or rewritten
    ]


def test_namespace_scoped_install_grants_and_peers_per_namespace() -> None:
    objects = render(PROFILES["namespace-scoped"])
    namespaces = ["team-a", "team-b"]
    assert env_of(operator_container(objects))["GREENLIGHT_NAMESPACES"]["value"] == "team-a,team-b"
    roles = [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-operator")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == namespaces
    bindings = [
        b for b in by_kind(objects, "RoleBinding") if b["metadata"]["name"].endswith("-operator")
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == namespaces
    (cluster_role,) = [
        r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("-operator")
    ]
    cluster_wide = rule_triples(cluster_role["rules"])
    namespaced = rule_triples(roles[0]["rules"])
    assert not {t for t in cluster_wide if t[1] in {"approvalrequests", "events"}}
    # Policies and namespace labels are read cluster-wide in either mode (policy matching).
    assert {verb for _, resource, verb in cluster_wide if resource == "namespaces"} == {
        "get",
        "list",
        "watch",
    }
    assert ("kopf.dev", "kopfpeerings", "patch") in namespaced
    assert cluster_wide | namespaced < CONTRACT_RULES
    peerings = by_kind(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == namespaces
    assert by_kind(objects, "ClusterKopfPeering") == []
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for webhook in one(objects, kind)["webhooks"]:
            assert webhook["namespaceSelector"]["matchExpressions"] == [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}
            ]


def test_slack_tokens_come_from_the_existing_secret() -> None:
    objects = render(PROFILES["slack"])
    container = operator_container(objects)
    env = env_of(container)
    for variable, key in (
        ("GREENLIGHT_SLACK_BOT_TOKEN", "bot-token"),
        ("GREENLIGHT_SLACK_SIGNING_SECRET", "signing-secret"),
    ):
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("greenlight-slack", key)
        assert "value" not in env[variable]
    assert "GREENLIGHT_SLACK_APP_TOKEN" not in env
    assert env["GREENLIGHT_SLACK_MODE"]["value"] == "http"
    assert env["GREENLIGHT_SLACK_DEFAULT_CHANNEL"]["value"] == "C0123456"
    # The chart never holds a token: its only Secrets are the webhook certificate and the
    # audit MAC key and receipt signing key it generates.
    secrets = sorted((s["type"], sorted(s["data"])) for s in by_kind(objects, "Secret"))
    assert secrets == [
        ("Opaque", ["audit.key"]),
        ("Opaque", ["receipt.key"]),
        ("kubernetes.io/tls", ["ca.crt", "tls.crt", "tls.key"]),
    ]
    config = named(objects, "ConfigMap", "-config")["data"]
    user_map_path = Path(env["GREENLIGHT_SLACK_USER_MAP_FILE"]["value"])
    assert yaml.safe_load(config[user_map_path.name]) == {"U0123ABC": "alice@example.com"}
    slack_port = {p["name"]: p for p in one(objects, "Service")["spec"]["ports"]}["slack"]
    assert slack_port["port"] == int(env["GREENLIGHT_SLACK_INTERACTIONS_PORT"]["value"]) == 3000
    ingress = one(objects, "Ingress")
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/slack/interactions"
    assert path["backend"]["service"]["port"] == {"name": "slack"}
    policy_ports = {
        p["port"]
        for rule in one(objects, "NetworkPolicy")["spec"]["ingress"]
        for p in rule["ports"]
    }
    assert 3000 in policy_ports


def test_socket_mode_reads_the_app_token_and_opens_no_slack_port() -> None:
    objects = render(PROFILES["slack-socket"])
    env = env_of(operator_container(objects))
    ref = env["GREENLIGHT_SLACK_APP_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("greenlight-slack", "app-token")
    assert env["GREENLIGHT_SLACK_SIGNING_SECRET"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "slack" not in {p["name"] for p in one(objects, "Service")["spec"]["ports"]}


def test_without_slack_the_console_notifier_is_left_in_charge(
    defaults: list[dict[str, Any]],
) -> None:
    env = env_of(operator_container(defaults))
    assert not [name for name in env if name.startswith("GREENLIGHT_SLACK_")]


def test_approver_and_requester_roles_are_the_shipped_file(
    defaults: list[dict[str, Any]],
) -> None:
    shipped = list(yaml.safe_load_all((OPERATOR_CHART / "files" / "clusterroles.yaml").read_text()))
    rendered = {r["metadata"]["name"]: r for r in by_kind(defaults, "ClusterRole")}
    for role in shipped:
        assert rendered[role["metadata"]["name"]] == role
    assert {"greenlight-approver", "greenlight-requester"} <= rendered.keys()
    without = render({"rbac": {"approverRoles": False}})
    names = {r["metadata"]["name"] for r in by_kind(without, "ClusterRole")}
    assert not names & {"greenlight-approver", "greenlight-requester"}


def test_crds_are_the_repository_files_plus_kopf_peering(defaults: list[dict[str, Any]]) -> None:
    repo_crds = sorted((REPO / "crds").glob("*.yaml"))
    assert repo_crds, "crds/ holds the ApprovalRequest CRD"
    chart_crds = OPERATOR_CHART / "crds"
    for source in repo_crds:
        linked = chart_crds / source.name
        assert linked.is_symlink(), f"{linked} must link to {source} (single source)"
        assert linked.resolve() == source.resolve()
    rendered = {c["metadata"]["name"]: c for c in by_kind(defaults, "CustomResourceDefinition")}
    for source in repo_crds:
        for crd in yaml.safe_load_all(source.read_text()):
            assert rendered[crd["metadata"]["name"]] == crd
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= rendered.keys()


def test_example_policies_render_only_when_enabled_as_the_shipped_files(
    defaults: list[dict[str, Any]],
) -> None:
    assert by_kind(defaults, "ClusterApprovalPolicy") == []
    shipped = {
        path.name: yaml.safe_load(path.read_text())
        for path in sorted((OPERATOR_CHART / "files" / "policies").glob("*.yaml"))
    }
    assert shipped, "files/policies/*.yaml holds the examples of docs/policy.md"
    rendered = by_kind(
        render({"policies": {"examples": {"enabled": True}}}), "ClusterApprovalPolicy"
    )
    assert sorted(rendered, key=lambda p: p["metadata"]["name"]) == sorted(
        shipped.values(), key=lambda p: p["metadata"]["name"]
    )


def test_namespace_admins_may_write_approval_policies_and_no_role_writes_cluster_ones(
    defaults: list[dict[str, Any]],
) -> None:
    roles = {r["metadata"]["name"]: r for r in by_kind(defaults, "ClusterRole")}
    admin = roles["greenlight-approvalpolicy-admin"]
    assert admin["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert ("greenlight.dev", "approvalpolicies", "create") in rule_triples(admin["rules"])
    view = roles["greenlight-approvalpolicy-view"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert {verb for _, _, verb in rule_triples(view["rules"])} == {"get", "list", "watch"}
    writes = {"create", "update", "patch", "delete", "deletecollection", "*"}
    for role in roles.values():
        for group, resource, verb in rule_triples(role["rules"]):
            granted = resource in {"clusterapprovalpolicies", "*"} and group in {
                "greenlight.dev",
                "*",
            }
            assert not (granted and verb in writes), (role["metadata"]["name"], verb)


def test_monitoring_objects_render_only_when_enabled(defaults: list[dict[str, Any]]) -> None:
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert by_kind(defaults, kind) == []
    assert [
        c for c in by_kind(defaults, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ] == []

    objects = render(PROFILES["monitoring"])
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "greenlight"
    service = one(objects, "Service")
    job_label = monitor["spec"]["jobLabel"]
    assert service["metadata"]["labels"][job_label] == "greenlight-operator"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    for rule in by_kind(objects, "PrometheusRule"):
        assert rule["metadata"]["labels"]["release"] == "greenlight"


def test_every_prometheus_rule_group_is_the_observability_file() -> None:
    rule_files = sorted((REPO / "observability" / "rules").glob("*.yaml"))
    assert rule_files, "observability/rules/*.yaml holds the alert rules"
    rendered = {
        r["metadata"]["annotations"]["greenlight.dev/source"]: r["spec"]["groups"]
        for r in by_kind(render(PROFILES["monitoring"]), "PrometheusRule")
    }
    expected = {
        f"observability/rules/{path.name}": yaml.safe_load(path.read_text())["groups"]
        for path in rule_files
    }
    assert rendered == expected


def test_every_dashboard_ships_in_a_labelled_configmap() -> None:
    dashboards = sorted((REPO / "observability" / "dashboards").glob("*.json"))
    assert dashboards, "observability/dashboards/*.json holds the dashboards"
    configmaps = [
        c
        for c in by_kind(render(PROFILES["monitoring"]), "ConfigMap")
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    shipped = {name: json.loads(content) for c in configmaps for name, content in c["data"].items()}
    assert shipped == {path.name: json.loads(path.read_text()) for path in dashboards}


def test_packaged_chart_carries_the_linked_crds_and_observability_files(tmp_path: Path) -> None:
    helm("package", str(OPERATOR_CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("greenlight-*.tgz")
    with tarfile.open(archive) as tar:
        members = {m.name for m in tar.getmembers() if m.isfile()}
    assert "greenlight/crds/greenlight.dev_approvalrequests.yaml" in members
    for path in (REPO / "observability" / "rules").glob("*.yaml"):
        assert f"greenlight/files/observability/rules/{path.name}" in members
    # The promtool tests and generators stay out of the chart.
    assert not [m for m in members if "/rules/tests/" in m or m.endswith(".py")]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"replicaCount": 0}, "/replicaCount"),
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"slack": {"mode": "webhook"}}, "/slack/mode"),
        ({"monitoring": {"enabeld": True}}, "enabeld"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"logLevel": "LOUD"}, "/logLevel"),
        ({"ports": {"metrics": 70000, "health": 8080, "webhook": 9443}}, "/ports/metrics"),
        (
            {"audit": {"persistence": {"accessMode": "ReadWriteOncePod"}}},
            "/audit/persistence/accessMode",
        ),
        ({"slack": {"ingress": {"enabled": True}}}, "/slack/ingress/host"),
        ({"healthChecks": [{"name": "vault"}]}, "/healthChecks/0"),
    ],
)
def test_schema_rejects_bad_values_naming_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(HelmError) as refused:
        render(values)
    assert "don't meet the specifications of the schema" in refused.value.stderr
    assert field in refused.value.stderr


def test_a_webhook_client_ca_without_names_is_refused() -> None:
    """With the CA alone, any certificate it signed (a user's, when it is the cluster CA)
    could call the webhooks."""
    with pytest.raises(HelmError) as refused:
        render({"webhook": {"clientAuth": {"caConfigMap": "apiserver-client-ca"}}})
    assert "webhook.clientAuth.names" in refused.value.stderr
    with pytest.raises(HelmError) as alone:
        render({"webhook": {"clientAuth": {"names": ["apiserver"]}}})
    assert "webhook.clientAuth.caConfigMap" in alone.value.stderr

    docs = render(
        {"webhook": {"clientAuth": {"caConfigMap": "apiserver-client-ca", "names": ["apiserver"]}}}
    )
    (statefulset,) = [d for d in docs if d["kind"] == "StatefulSet"]
    env = {
        e["name"]: e.get("value")
        for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["GREENLIGHT_WEBHOOK_CLIENT_NAMES"] == "apiserver"
