"""The whole umbrella, and the GitOps bundle, accepted by a real API server.

The CRDs the rendered release carries (Greenlight's, kopf's, the prometheus-operator CRDs of
kube-prometheus-stack, Alloy's PodLogs) are installed for real; then every other object is
applied with ``kubectl apply --server-side --dry-run=server``, so the API server validates each
one against its schema (built-in kinds and the custom resources alike) and runs admission.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml
from tests.charts.render import REPO, load_manifests
from tests.charts.stack import STACK_NAMESPACE, STACK_PROFILES, StackRenders
from tests.support.kubectl import Kubectl

from greenlight.devcluster import ControlPlane

DRY_RUN_APPLIED = "serverside-applied (server dry run)"
OBSERVABILITY = REPO / "observability"
# Building the umbrella and rendering it several times takes minutes on a busy machine.
pytestmark = pytest.mark.timeout(900)


def _ensure_namespace(kubectl: Kubectl, name: str) -> None:
    if kubectl("get", "namespace", name, check=False).returncode != 0:
        kubectl("create", "namespace", name)


def _apply(kubectl: Kubectl, objects: list[dict[str, Any]], *extra: str) -> str:
    stream = yaml.safe_dump_all(objects)
    done = kubectl(
        "apply", "--server-side", "--force-conflicts", *extra, "-f", "-", input=stream, timeout=300
    )
    return done.stdout


def _install_crds(kubectl: Kubectl, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply the CRDs for real and wait until they serve; return every other object."""
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    _apply(kubectl, crds)
    for crd in crds:
        kubectl(
            "wait",
            "--for=condition=Established",
            f"crd/{crd['metadata']['name']}",
            "--timeout=60s",
        )
    return [o for o in objects if o["kind"] != "CustomResourceDefinition"]


@pytest.mark.parametrize("profile", list(STACK_PROFILES))
def test_every_object_of_the_umbrella_passes_a_server_side_dry_run(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    stack_renders: StackRenders,
    profile: str,
) -> None:
    objects = stack_renders(profile)
    _ensure_namespace(kubectl, STACK_NAMESPACE)
    rest = _install_crds(kubectl, objects)
    out = _apply(kubectl, rest, "--dry-run=server")
    applied = out.count(DRY_RUN_APPLIED)
    print(f"profile {profile}: {len(objects)} objects rendered, {applied} dry-run applied")
    assert applied == len(rest), out
    kinds = {o["kind"] for o in rest}
    assert {"Prometheus", "Alertmanager", "ServiceMonitor", "PrometheusRule", "Probe"} <= kinds
    assert {"StatefulSet", "DaemonSet", "Deployment", "NetworkPolicy"} <= kinds


def test_gitops_bundle_passes_a_server_side_dry_run(
    control_plane: ControlPlane, kubectl: Kubectl, stack_renders: StackRenders
) -> None:
    _install_crds(kubectl, stack_renders("defaults"))
    _ensure_namespace(kubectl, STACK_NAMESPACE)
    built = subprocess.run(
        [str(kubectl.binary), "kustomize", str(OBSERVABILITY)],
        capture_output=True,
        text=True,
        check=True,
    )
    objects = load_manifests(built.stdout)
    out = _apply(kubectl, objects, "--dry-run=server", "-n", STACK_NAMESPACE)
    applied = out.count(DRY_RUN_APPLIED)
    print(f"observability/ kustomization: {len(objects)} objects, {applied} dry-run applied")
    assert applied == len(objects), out
    assert {o["kind"] for o in objects} == {"PrometheusRule", "ConfigMap", "Secret"}
