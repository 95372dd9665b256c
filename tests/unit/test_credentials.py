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


def read_in_a_process(config: Path, cwd: Path | None = None) -> dict[str, Any]:
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
