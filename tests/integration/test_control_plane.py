"""The local control plane is a real Kubernetes API: version, RBAC, CRDs, webhooks, restarts.

Everything later tiers rely on is pinned here, against the real kube-apiserver and etcd.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from kubernetes import client
from tests.support.fixtures import REPO
from tests.support.kubectl import Kubectl

from greenlight.devcluster import ControlPlane, ControlPlaneError, install
from greenlight.devcluster.commands import configured_cluster
from greenlight.devcluster.controlplane import find_assets, free_port
from greenlight.devcluster.manifests import InstallError
from greenlight.devcluster.processes import is_running
from greenlight.pki import create_ca, issue_certificate


def pinned_kubernetes_version() -> str:
    for line in (REPO / "hack" / "envtest" / "versions.env").read_text().splitlines():
        if line.startswith("KUBERNETES_VERSION="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("versions.env pins no KUBERNETES_VERSION")


def test_apiserver_reports_the_pinned_kubernetes_version(control_plane: ControlPlane) -> None:
    version = client.VersionApi(control_plane.api_client()).get_code()

    assert version.git_version == pinned_kubernetes_version()


def test_user_without_bindings_is_forbidden_to_list_secrets(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl("get", "secrets", "-n", namespace)  # the admin may, so the refusal below is RBAC

    refused = kubectl("get", "secrets", "-n", namespace, as_user="mallory", check=False)

    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr
    assert 'User "mallory" cannot list resource "secrets"' in refused.stderr


def test_impersonated_users_get_what_their_bindings_grant(kubectl: Kubectl, namespace: str) -> None:
    orchestrator = f"system:serviceaccount:{namespace}:orchestrator"
    kubectl("create", "role", "secret-reader", "--verb=list", "--resource=secrets", "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        "readers",
        "--role=secret-reader",
        "--user=alice",
        f"--serviceaccount={namespace}:orchestrator",
        "-n",
        namespace,
    )
    kubectl(
        "create",
        "rolebinding",
        "approvers",
        "--clusterrole=greenlight-approver",
        "--user=alice",
        "-n",
        namespace,
    )

    def can(user: str, *what: str) -> bool:
        answer = kubectl("auth", "can-i", *what, "-n", namespace, as_user=user, check=False)
        return answer.stdout.strip() == "yes"

    assert kubectl("get", "secrets", "-n", namespace, as_user="alice").returncode == 0
    assert kubectl("get", "secrets", "-n", namespace, as_user=orchestrator).returncode == 0
    assert can("alice", "approve", "approvalrequests.greenlight.dev")
    assert not can(orchestrator, "approve", "approvalrequests.greenlight.dev")
    assert not can("bob", "list", "secrets")


def test_greenlight_crd_is_installed_and_established(kubectl: Kubectl, namespace: str) -> None:
    crd = kubectl.json("get", "crd", "approvalrequests.greenlight.dev")

    established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
    assert established[0]["status"] == "True"
    assert kubectl("get", "apr", "-n", namespace).returncode == 0


def widget_crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "maximum": 3}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def test_install_returns_once_the_crd_is_established(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    group = f"{namespace}.example.com"
    (tmp_path / "widgets.yaml").write_text(yaml.safe_dump(widget_crd(group)))

    installed = install(control_plane.kubeconfig, [tmp_path])
    # No sleep or retry: the new type must be served, from its watch cache too (what informers
    # and kopf list from), the moment install() returns.
    kubectl("get", "--raw", f"/apis/{group}/v1/widgets?resourceVersion=0")
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}}
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(widget))
    reinstalled = install(control_plane.kubeconfig, [tmp_path])

    assert installed == reinstalled == [f"widgets.{group}"]
    too_big = {**widget, "metadata": {"name": "big"}, "spec": {"size": 4}}
    refused = kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(too_big), check=False)
    assert "spec.size" in refused.stderr
    kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_install_reports_what_the_api_server_refused(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    broken = widget_crd("broken.example.com")
    del broken["spec"]["names"]["plural"]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))

    with pytest.raises(InstallError, match=r"spec\.names\.plural"):
        install(control_plane.kubeconfig, [tmp_path])


def test_restart_apiserver_keeps_data_and_address(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("create", "configmap", "kept", "--from-literal=answer=42", "-n", namespace)
    server = control_plane.server
    kubeconfig = control_plane.kubeconfig.read_text()

    control_plane.restart_apiserver()

    assert control_plane.server == server
    assert control_plane.kubeconfig.read_text() == kubeconfig
    kept = kubectl.json("get", "configmap", "kept", "-n", namespace)
    assert kept["data"] == {"answer": "42"}


class AdmissionWebhook:
    """A validating webhook on 127.0.0.1 that refuses ConfigMaps named ``forbidden-*``.

    The refusal names the user the API server says made the request, which is what
    Greenlight's decision webhook relies on.
    """

    def __init__(self) -> None:
        ca_key, ca_cert = create_ca("webhook-test-ca")
        key, cert = issue_certificate(
            ca_cert, ca_key, common_name="webhook", ip_addresses=["127.0.0.1"], server=True
        )
        self.ca_bundle = base64.b64encode(ca_cert.public_bytes(serialization.Encoding.PEM)).decode()
        self._cert = cert.public_bytes(serialization.Encoding.PEM)
        self._key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Review)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/validate"

    def serve(self, directory: Path) -> threading.Thread:
        (directory / "tls.crt").write_bytes(self._cert)
        (directory / "tls.key").write_bytes(self._key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        return thread


class _Review(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        name = request["object"]["metadata"].get("name", "")
        user = request["userInfo"]["username"]
        allowed = not name.startswith("forbidden-")
        response: dict[str, Any] = {"uid": request["uid"], "allowed": allowed}
        if not allowed:
            response["status"] = {"code": 403, "message": f"{user} may not create {name}"}
        body = json.dumps({**review, "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep pytest's output clean."""


@pytest.fixture
def admission_webhook(kubectl: Kubectl, namespace: str, tmp_path: Path) -> Iterator[None]:
    webhook = AdmissionWebhook()
    webhook.serve(tmp_path)
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": namespace},
        "webhooks": [
            {
                "name": "configmaps.test.greenlight.dev",
                "clientConfig": {"url": webhook.url, "caBundle": webhook.ca_bundle},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    kubectl("apply", "-f", "-", input=json.dumps(configuration))
    yield
    kubectl("delete", "validatingwebhookconfiguration", namespace)
    webhook.server.shutdown()


@pytest.mark.usefixtures("admission_webhook")
def test_admission_webhook_sees_the_impersonated_caller(kubectl: Kubectl, namespace: str) -> None:
    kubectl(
        "create", "role", "cm-writer", "--verb=create", "--resource=configmaps", "-n", namespace
    )
    kubectl("create", "rolebinding", "cm", "--role=cm-writer", "--user=alice", "-n", namespace)
    forbidden = json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "forbidden-"}}
    )

    # The API server picks up a new webhook configuration within a moment, not instantly.
    deadline = time.monotonic() + 15
    while True:
        refused = kubectl(
            "create", "-n", namespace, "-f", "-", input=forbidden, as_user="alice", check=False
        )
        if refused.returncode != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    allowed = kubectl("create", "configmap", "fine", "-n", namespace, as_user="alice", check=False)

    assert refused.returncode != 0
    assert "denied the request" in refused.stderr
    assert "alice may not create forbidden-" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr


def test_configured_cluster_is_used_when_it_answers(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cluster = configured_cluster(
        {"KUBECONFIG": str(control_plane.kubeconfig), "HOME": str(tmp_path)}
    )

    assert cluster is not None
    assert cluster.kubeconfig == str(control_plane.kubeconfig)
    assert "greenlight-dev" in cluster.description


def test_configured_cluster_that_does_not_answer_is_passed_over_within_seconds(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    dead = yaml.safe_load(control_plane.kubeconfig.read_text())
    dead["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(yaml.safe_dump(dead))
    started = time.monotonic()

    cluster = configured_cluster({"HOME": str(tmp_path)})

    assert cluster is None
    assert time.monotonic() - started < 6


def test_no_configured_cluster_means_none(tmp_path: Path) -> None:
    assert configured_cluster({"HOME": str(tmp_path)}) is None
    assert configured_cluster({"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "nope")}) is None


def test_startup_failure_names_the_servers_last_words(tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "etcd").symlink_to(find_assets() / "etcd")
    apiserver = assets / "kube-apiserver"
    apiserver.write_text(
        "#!/bin/sh\necho 'error: --etcd-servers is broken on purpose' >&2\nexit 3\n"
    )
    apiserver.chmod(0o755)

    with pytest.raises(ControlPlaneError) as failure:
        ControlPlane(tmp_path / "cluster", assets=assets).start()

    assert "kube-apiserver exited with code 3" in str(failure.value)
    assert "--etcd-servers is broken on purpose" in str(failure.value)
    assert not ControlPlane.in_use(tmp_path / "cluster")


def start_up_command(cluster_dir: Path) -> tuple[subprocess.Popen[str], Path]:
    """``python -m greenlight.devcluster up`` and the kubeconfig it announces once ready."""
    up = subprocess.Popen(
        [sys.executable, "-m", "greenlight.devcluster", "up", "--dir", str(cluster_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
    )
    assert up.stdout is not None
    seen = []
    for line in up.stdout:
        seen.append(line)
        if "export KUBECONFIG=" in line:
            return up, Path(line.split("=", 1)[1].strip())
    raise AssertionError(f"`up` exited ({up.wait()}) without a kubeconfig:\n{''.join(seen)}")


def server_pids(cluster_dir: Path) -> list[int]:
    return list(json.loads((cluster_dir / "pids.json").read_text()).values())


def wait_until_gone(pids: list[int], timeout: float = 15) -> list[int]:
    """The pids still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if is_running(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def test_up_serves_until_interrupted_and_leaves_no_processes(tmp_path: Path) -> None:
    cluster_dir = tmp_path / "cluster"
    up, kubeconfig = start_up_command(cluster_dir)
    try:
        pids = server_pids(cluster_dir)
        answered = Kubectl(kubeconfig)("get", "crd", "approvalrequests.greenlight.dev")
        with pytest.raises(ControlPlaneError, match="already running"):
            ControlPlane(cluster_dir).start()
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=30)

    assert answered.returncode == 0
    assert code == 0
    assert wait_until_gone(pids, timeout=0) == []
    assert not ControlPlane.in_use(cluster_dir)


def test_servers_die_with_a_killed_owner_and_the_data_survives(tmp_path: Path) -> None:
    cluster_dir = tmp_path / "cluster"
    up, kubeconfig = start_up_command(cluster_dir)
    Kubectl(kubeconfig)("create", "configmap", "survivor", "-n", "default")
    pids = server_pids(cluster_dir)

    up.kill()
    up.wait()

    assert wait_until_gone(pids) == []
    with ControlPlane(cluster_dir) as again:
        assert Kubectl(again.kubeconfig)("get", "configmap", "survivor", "-n", "default")


def test_service_account_tokens_authenticate_as_the_service_account(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("create", "serviceaccount", "orchestrator", "-n", namespace)
    token = kubectl("create", "token", "orchestrator", "-n", namespace).stdout.strip()

    whoami = subprocess.run(
        [
            str(kubectl.binary),
            f"--server={control_plane.server}",
            f"--certificate-authority={control_plane.ca_file}",
            f"--token={token}",
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
    )

    assert whoami.stdout == f"system:serviceaccount:{namespace}:orchestrator"


def test_start_kills_servers_a_crashed_owner_left_behind_and_nothing_else(
    tmp_path: Path,
) -> None:
    cluster_dir = (tmp_path / "cluster").resolve()
    cluster_dir.mkdir()
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
    leftover = subprocess.Popen([*sleeper, str(cluster_dir)], start_new_session=True)
    stranger = subprocess.Popen([*sleeper, "unrelated"], start_new_session=True)
    (cluster_dir / "pids.json").write_text(
        json.dumps({"etcd": leftover.pid, "kube-apiserver": stranger.pid})
    )
    try:
        with ControlPlane(cluster_dir):
            left_over_code = leftover.wait(timeout=10)
            stranger_code = stranger.poll()
    finally:
        stranger.kill()
        stranger.wait()

    assert left_over_code == -signal.SIGKILL
    assert stranger_code is None
