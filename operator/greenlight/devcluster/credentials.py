"""The local control plane's certificates and keys: which files, for whom.

Everything is generated (with :mod:`greenlight.pki`) on first start and reused afterwards, so a
kubeconfig handed out for a persistent cluster directory stays valid across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from greenlight.pki import KeyPair, create_ca, issue_certificate, write_pair, write_private

ADMIN_USER = "greenlight-admin"
# The client certificate kube-apiserver presents to admission webhooks (its admission
# configuration names it); the operator accepts webhook calls only from this name.
WEBHOOK_CLIENT = "kube-apiserver-webhook-client"
ADMIN_GROUP = "system:masters"

_APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# 127.0.0.1 is where the server listens; 10.0.0.1 is the `kubernetes` Service's cluster IP.
_APISERVER_IPS = ("127.0.0.1", "10.0.0.1")


@dataclass(frozen=True)
class ControlPlanePki:
    """The files kube-apiserver and its admin client need."""

    ca: KeyPair
    apiserver: KeyPair
    admin: KeyPair
    webhook_client: KeyPair
    service_account_key: Path
    service_account_pub: Path

    def files(self) -> tuple[Path, ...]:
        return (
            self.ca.cert,
            self.ca.key,
            self.apiserver.cert,
            self.apiserver.key,
            self.admin.cert,
            self.admin.key,
            self.webhook_client.cert,
            self.webhook_client.key,
            self.service_account_key,
            self.service_account_pub,
        )


def ensure_pki(directory: Path) -> ControlPlanePki:
    """Return the control plane's PKI in ``directory``, generating it when any file is missing."""
    pki = ControlPlanePki(
        ca=KeyPair(directory / "ca.crt", directory / "ca.key"),
        apiserver=KeyPair(directory / "apiserver.crt", directory / "apiserver.key"),
        admin=KeyPair(directory / "admin.crt", directory / "admin.key"),
        webhook_client=KeyPair(directory / "webhook-client.crt", directory / "webhook-client.key"),
        service_account_key=directory / "service-account.key",
        service_account_pub=directory / "service-account.pub",
    )
    if all(path.is_file() for path in pki.files()):
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = create_ca("greenlight-devcluster-ca")
    write_pair(pki.ca, ca_cert, ca_key)
    apiserver_key, apiserver_cert = issue_certificate(
        ca_cert,
        ca_key,
        common_name="kube-apiserver",
        dns_names=_APISERVER_DNS_NAMES,
        ip_addresses=_APISERVER_IPS,
        server=True,
    )
    write_pair(pki.apiserver, apiserver_cert, apiserver_key)
    admin_key, admin_cert = issue_certificate(
        ca_cert, ca_key, common_name=ADMIN_USER, organizations=(ADMIN_GROUP,), client=True
    )
    write_pair(pki.admin, admin_cert, admin_key)
    client_key, client_cert = issue_certificate(
        ca_cert, ca_key, common_name=WEBHOOK_CLIENT, client=True
    )
    write_pair(pki.webhook_client, client_cert, client_key)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    write_private(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
