"""Where the operator's credentials come from (`kube.operator_credentials`): a kubeconfig kopf's
reader understands, else the official client's loader (exec plugins, relative paths)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.skipif(
    Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists(),
    reason="in a pod the service account comes first",
)
SERVER = "https://127.0.0.1:6443"


def kubeconfig(path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "here",
        "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": SERVER, **(cluster or {})}}],
        "users": [{"name": "u", "user": user}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def read_in_a_process(config: Path | str, cwd: Path | None = None) -> dict[str, Any]:
    """`operator_credentials()` in a fresh process that imports as `greenlight operator` does
    (kopf without the official client), with KUBECONFIG=config."""
    program = (
        "import json, sys\n"
        "from greenlight.core.imports import absent\n"
        "with absent('kubernetes', 'rich'):\n"
        "    import greenlight.app\n"
        "from greenlight.kube import NoCredentials, operator_credentials\n"
        "try:\n"
        "    c = operator_credentials()\n"
        "except NoCredentials as exc:\n"
        "    print(json.dumps({'error': str(exc)}))\n"
        "    sys.exit()\n"
        "i = c.current()\n"
        "print(json.dumps({'server': c.server, 'headers': c.headers(), 'ca': str(i.ca_path),\n"
        "    'certificate': i.certificate_data, 'key': i.private_key_data,\n"
        "    'official': 'kubernetes' in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=cwd,
        env=os.environ | {"KUBECONFIG": str(config)},
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_token_kubeconfig_is_read_by_kopf_without_the_official_client(tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "config", {"token": "abc"}, {"insecure-skip-tls-verify": True})

    read = read_in_a_process(config)

    assert (read["server"], read["headers"], read["official"]) == (
        SERVER,
        {"Authorization": "Bearer abc"},
        False,
    )


def test_an_exec_plugin_s_token_comes_through_the_official_loader(tmp_path: Path) -> None:
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "from-the-plugin"},
    }
    plugin = tmp_path / "plugin"
    plugin.write_text(f"#!/bin/sh\necho '{json.dumps(credential)}'\n")
    plugin.chmod(0o755)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "interactiveMode": "Never",
        }
    }

    read = read_in_a_process(kubeconfig(tmp_path / "config", user))

    assert (read["server"], read["headers"], read["official"]) == (
        SERVER,
        {"Authorization": "Bearer from-the-plugin"},
        True,
    )


def test_a_path_relative_to_the_kubeconfig_is_read_from_its_folder(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    config = kubeconfig(tmp_path / "config", {"token": "abc"}, {"certificate-authority": "ca.crt"})

    read = read_in_a_process(config, cwd=Path("/"))

    assert Path(read["ca"]) == tmp_path / "ca.crt"
    assert read["headers"] == {"Authorization": "Bearer abc"}


def test_certificate_data_is_used_as_it_is(tmp_path: Path) -> None:
    pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    user = {"client-certificate-data": pem, "client-key-data": pem}

    read = read_in_a_process(kubeconfig(tmp_path / "config", user))

    assert (read["certificate"], read["key"], read["headers"]) == (pem, pem, {})
    assert read["official"] is False


def test_no_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    read = read_in_a_process(tmp_path / "missing")

    assert "kubeconfig" in read["error"]
    assert "missing" in read["error"]


def test_an_auth_provider_s_token_is_not_frozen_by_kopf_s_reader(tmp_path: Path) -> None:
    """kopf's reader would send the provider's cached `access-token` for good; the official
    loader sends (and renews) the id token."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    id_token = f"{part({'alg': 'none'})}.{part({'exp': 4102444800})}.c2ln"
    provider = {
        "name": "oidc",
        "config": {"id-token": id_token, "access-token": "stale", "client-id": "greenlight"},
    }

    read = read_in_a_process(kubeconfig(tmp_path / "config", {"auth-provider": provider}))

    assert (read["headers"], read["official"]) == ({"Authorization": f"Bearer {id_token}"}, True)


def test_a_missing_file_in_a_kubeconfig_list_is_skipped(tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "config", {"token": "abc"})

    read = read_in_a_process(f"{tmp_path / 'missing'}{os.pathsep}{config}")

    assert (read["server"], read["headers"]) == (SERVER, {"Authorization": "Bearer abc"})


def test_a_cluster_without_a_server_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        yaml.safe_dump(
            {
                "current-context": "here",
                "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": {}}],
                "users": [{"name": "u", "user": {"token": "abc"}}],
            }
        )
    )

    read = read_in_a_process(config)

    assert "server" in read["error"]


@pytest.mark.parametrize(
    ("host", "server"),
    [("10.96.0.1", "https://10.96.0.1:443"), ("fd00::1", "https://[fd00::1]:443")],
)
def test_in_a_pod_the_api_server_is_the_service_address(
    host: str, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kopf

    from greenlight.kube import _in_cluster_server

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    info = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="t")

    assert _in_cluster_server(info).server == server
    assert _in_cluster_server(info).token == "t"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert _in_cluster_server(info).server == "https://kubernetes.default.svc"


def test_the_tls_context_is_built_again_when_the_tls_material_changes() -> None:
    import kopf

    from greenlight.kube import Credentials

    infos = [kopf.ConnectionInfo(server=SERVER, insecure=True, token="t")]
    credentials = Credentials(lambda: infos[-1], refresh=0)
    first = credentials.ssl_context()
    infos.append(kopf.ConnectionInfo(server=SERVER, insecure=True, token="renewed"))
    assert credentials.ssl_context() is first  # a new token alone keeps the context

    infos.append(kopf.ConnectionInfo(server=SERVER, insecure=False, token="renewed"))
    again = credentials.ssl_context()

    assert again is not first
    assert (again.check_hostname, first.check_hostname) == (True, False)


async def test_the_pool_moves_to_a_new_session_when_the_tls_material_changes() -> None:
    import kopf

    from greenlight.kube import Credentials, Kube

    infos = [kopf.ConnectionInfo(server=SERVER, insecure=True, token="t")]
    kube = Kube(Credentials(lambda: infos[-1], refresh=0))
    first = kube._http()
    assert kube._http() is first

    infos.append(kopf.ConnectionInfo(server=SERVER, insecure=False, token="t"))
    second = kube._http()

    assert second is not first
    assert not first.closed  # calls still on it may finish
    await kube.close()
    assert (first.closed, second.closed) == (True, True)
