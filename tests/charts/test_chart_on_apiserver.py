"""The operator chart against the real API server: its manifests are accepted (server-side
dry-run), and the operator runs a full lifecycle with nothing but the chart's own ServiceAccount
permissions (a real ServiceAccount token) — proof that the RBAC the chart grants is enough."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from tests.charts.render import render
from tests.support.kubectl import Kubectl
from tests.support.operator import OperatorProcess

from greenlight.devcluster import ControlPlane

RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
PEERING_KINDS = {"ClusterKopfPeering", "KopfPeering"}
CHART_NAMESPACE = "greenlight"
SERVICE_ACCOUNT = f"system:serviceaccount:{CHART_NAMESPACE}:greenlight"


def _apply(kubectl: Kubectl, objects: list[dict[str, Any]], *extra: str) -> str:
    stream = yaml.safe_dump_all(objects)
    return kubectl(
        "apply", "--server-side", "--force-conflicts", *extra, "-f", "-", input=stream
    ).stdout


def _ensure_namespace(kubectl: Kubectl, name: str) -> None:
    if kubectl("get", "namespace", name, check=False).returncode != 0:
        kubectl("create", "namespace", name)


def _service_account_kubeconfig(plane: ControlPlane, kubectl: Kubectl, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount with a real bound token."""
    token = kubectl("-n", CHART_NAMESPACE, "create", "token", "greenlight", "--duration=1h").stdout
    config = yaml.safe_load(plane.kubeconfig.read_text())
    for entry in config["users"]:
        entry["user"] = {"token": token.strip()}
    path.write_text(yaml.safe_dump(config))
    return path


def test_rendered_manifests_pass_server_side_dry_run(
    control_plane: ControlPlane, kubectl: Kubectl
) -> None:
    _ensure_namespace(kubectl, CHART_NAMESPACE)
    objects = render({})
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    _apply(kubectl, crds)
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    out = _apply(kubectl, rest, "--dry-run=server")
    kinds = {o["kind"] for o in rest}
    assert {
        "StatefulSet",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    } <= kinds
    assert out.count("serverside-applied (server dry run)") == len(rest)


def test_operator_runs_a_full_lifecycle_with_only_the_charts_permissions(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    operator_process: OperatorProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    _ensure_namespace(kubectl, CHART_NAMESPACE)
    objects = render({"webhook": {"manage": True}})
    _apply(kubectl, [o for o in objects if o["kind"] == "CustomResourceDefinition"])
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    _apply(kubectl, [o for o in objects if o["kind"] in RBAC_KINDS | PEERING_KINDS])
    kubeconfig = _service_account_kubeconfig(control_plane, kubectl, tmp_path / "sa.kubeconfig")
    operator_process.stop()  # one operator at a time owns the webhook configuration
    chart_operator = OperatorProcess(
        control_plane,
        tmp_path / "operator",
        env={"KUBECONFIG": str(kubeconfig), "GREENLIGHT_PEERING": "greenlight"},
    )
    chart_operator.start()
    try:
        kubectl(
            "-n",
            namespace,
            "create",
            "rolebinding",
            "approvers",
            "--clusterrole=greenlight-approver",
            "--user=alice",
        )
        manifest = {
            "apiVersion": "greenlight.dev/v1alpha1",
            "kind": "ApprovalRequest",
            "metadata": {"name": "chart-rbac", "namespace": namespace},
            "spec": {
                "action": "pulumi destroy",
                "target": "prod",
                "requester": {"workflowId": "wf-chart"},
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(manifest))
        kubectl(
            "-n",
            namespace,
            "wait",
            "apr/chart-rbac",
            "--for=jsonpath={.status.conditions[?(@.type=='Notified')].status}=True",
            "--timeout=30s",
        )
        kubectl(
            "-n",
            namespace,
            "annotate",
            "apr/chart-rbac",
            "greenlight.dev/decision=approve",
            as_user="alice",
        )
        kubectl(
            "-n",
            namespace,
            "wait",
            "apr/chart-rbac",
            "--for=jsonpath={.status.phase}=Approved",
            "--timeout=30s",
        )
        forbidden = [
            r for r in chart_operator.log_records() if "forbidden" in json.dumps(r).lower()
        ]
        assert forbidden == []
        identities = {r.get("identity") for r in chart_operator.log_records() if r.get("identity")}
        assert identities == {SERVICE_ACCOUNT}
    finally:
        chart_operator.stop()
