"""Real users for the `greenlight` CLI: one kubeconfig per identity, with a client certificate.

`kubectl --as` impersonates, but the CLI talks to the API server through the Python client,
which ignores a kubeconfig's `as:` field. So each user gets what a real cluster would give them:
a person a client certificate (CN = user name, O = groups) signed by the control plane's client
CA, a service account a token from the TokenRequest API. The API server authenticates them like
any other caller; RBAC and the webhooks see that identity.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client

from greenlight.devcluster import ControlPlane
from greenlight.devcluster.credentials import ensure_pki
from greenlight.pki import issue_certificate


def service_account_groups(user: str) -> tuple[str, ...]:
    """The groups the API server gives a service account (empty for anyone else)."""
    match = re.fullmatch(r"system:serviceaccount:([^:]+):[^:]+", user)
    if match is None:
        return ()
    return ("system:serviceaccounts", f"system:serviceaccounts:{match.group(1)}")


def service_account_token(plane: ControlPlane, user: str) -> str:
    """A bound token for a service account (created if missing), from the TokenRequest API:
    exactly how a workload in the cluster authenticates."""
    match = re.fullmatch(r"system:serviceaccount:([^:]+):([^:]+)", user)
    if match is None:
        raise ValueError(f"{user!r} is not a service account user name")
    namespace, name = match.groups()
    api = plane.api_client()
    try:
        core = client.CoreV1Api(api)
        try:
            core.create_namespaced_service_account(
                namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
            )
        except client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
        review = core.create_namespaced_service_account_token(
            name,
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
            ),
        )
        assert review.status is not None, "a TokenRequest answers with its status"
        return str(review.status.token)
    finally:
        api.close()


def user_kubeconfig(
    plane: ControlPlane, directory: Path, user: str, groups: Sequence[str] = ()
) -> Path:
    """A kubeconfig that authenticates as `user`: a service account by its token, anyone else
    by a fresh client certificate (CN = user, O = groups)."""
    pki = ensure_pki(plane.workdir / "pki")

    def encoded(data: bytes) -> str:
        return base64.b64encode(data).decode()

    credentials: dict[str, str]
    if service_account_groups(user):
        credentials = {"token": service_account_token(plane, user)}
    else:
        ca_cert = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
        ca_key = serialization.load_pem_private_key(pki.ca.key.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError("the control plane's CA key is not an EC key")
        key, cert = issue_certificate(
            ca_cert, ca_key, common_name=user, organizations=tuple(groups), client=True
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        credentials = {
            "client-certificate-data": encoded(cert.public_bytes(serialization.Encoding.PEM)),
            "client-key-data": encoded(key_pem),
        }
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "greenlight",
                "cluster": {
                    "server": plane.server,
                    "certificate-authority-data": encoded(pki.ca.cert.read_bytes()),
                },
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "greenlight", "context": {"cluster": "greenlight", "user": user}}],
        "current-context": "greenlight",
    }
    directory.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", "-".join((user, *groups)))
    path = directory / f"{slug}.kubeconfig"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class GreenlightCli:
    """Runs `greenlight ...` (the installed console script's module) as a given user."""

    plane: ControlPlane
    directory: Path

    def kubeconfig(self, user: str | None, groups: Sequence[str] = ()) -> Path:
        if user is None:
            return self.plane.kubeconfig
        return _cached_kubeconfig(self.plane, self.directory, user, tuple(groups))

    def env(self, user: str | None, groups: Sequence[str] = ()) -> dict[str, str]:
        env = self.plane.env()
        env["KUBECONFIG"] = str(self.kubeconfig(user, groups))
        for key in [k for k in env if k.startswith("OTEL_")]:
            del env[key]
        env["OTEL_TRACES_EXPORTER"] = "none"
        env.pop("GREENLIGHT_NAMESPACE", None)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "greenlight", *args]

    def __call__(
        self,
        *args: str,
        as_user: str | None = None,
        groups: Sequence[str] = (),
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI to completion; the exit code is the caller's to check."""
        return subprocess.run(
            self.argv(*args),
            input=input,
            capture_output=True,
            text=True,
            env=self.env(as_user, groups),
            timeout=timeout,
            check=False,
        )

    def start(
        self, *args: str, as_user: str | None = None, groups: Sequence[str] = ()
    ) -> subprocess.Popen[str]:
        """Start the CLI in the background (e.g. `request --wait`); read it with communicate()."""
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(as_user, groups),
        )


@cache
def _cached_kubeconfig(
    plane: ControlPlane, directory: Path, user: str, groups: tuple[str, ...]
) -> Path:
    return user_kubeconfig(plane, directory, user, groups)


def cli_for(plane: ControlPlane) -> GreenlightCli:
    """One CLI runner per control plane; its kubeconfigs live beside the plane's own."""
    return GreenlightCli(plane, plane.workdir / "users")
