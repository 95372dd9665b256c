"""Serving certificates for the admission webhook when the operator manages its own
configuration (the local control plane). In a cluster the chart or cert-manager provides them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from greenlight.pki import KeyPair, create_ca, issue_certificate, write_pair


@dataclass(frozen=True)
class WebhookCerts:
    cert: Path
    key: Path
    ca: Path


def ensure_webhook_certs(directory: Path, host: str) -> WebhookCerts:
    """A CA and a serving certificate for `host`, created once and reused."""
    certs = WebhookCerts(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")
    if all(p.exists() for p in (certs.cert, certs.key, certs.ca)) and _names(certs.cert) >= {host}:
        return certs
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = create_ca("greenlight-webhook-ca")
    is_ip = host.replace(".", "").isdigit() or ":" in host
    key, cert = issue_certificate(
        ca_cert,
        ca_key,
        common_name=host,
        server=True,
        dns_names=() if is_ip else (host,),
        ip_addresses=(host,) if is_ip else (),
    )
    certs.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    write_pair(KeyPair(certs.cert, certs.key), cert, key)
    return certs


def _names(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in sans.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in sans.get_values_for_type(x509.IPAddress)
    }
