"""The operator's receipt signing key, and the ConfigMap that publishes the public keys.

The private key is a PEM file (PKCS#8): in a cluster the chart's Secret, generated once and kept;
locally (`make run`, tests) created once next to the audit file, mode 0600. The public keys are
published in a ConfigMap, one entry `<keyid>.pem` per key: the operator adds its current key at
start and never removes one, so receipts signed by an earlier key stay verifiable after a
rotation (old keys listed in the chart's values are rendered into the same ConfigMap).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import kubernetes
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from kubernetes.client.exceptions import ApiException

from greenlight.core.dsse import Signer, parse_private_key, public_pem

_log = structlog.get_logger("greenlight.receipts")


def load_or_create_signer(path: Path) -> Signer:
    """The receipt key at `path`; created (0600) on first use when the file does not exist."""
    if path.exists():
        try:
            return Signer(parse_private_key(path.read_bytes()))
        except ValueError as exc:
            raise ValueError(f"receipt key {path}: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return Signer(key)


def entry_name(signer: Signer) -> str:
    return f"{signer.key_id}.pem"


async def publish(
    api_client: kubernetes.client.ApiClient, namespace: str, name: str, signer: Signer
) -> None:
    """Add the current public key to the ConfigMap `namespace/name` (created if absent).
    A failure is logged, not fatal: receipts are still signed, and the key can be read from
    the key file (`greenlight receipt keys --key-file`)."""
    core = kubernetes.client.CoreV1Api(api_client)
    pem = public_pem(signer.private_key.public_key())
    body = {"data": {entry_name(signer): pem}}

    def write() -> None:
        try:
            core.patch_namespaced_config_map(name, namespace, body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            core.create_namespaced_config_map(
                namespace,
                kubernetes.client.V1ConfigMap(
                    metadata=kubernetes.client.V1ObjectMeta(name=name, namespace=namespace),
                    data=body["data"],
                ),
            )

    try:
        await asyncio.to_thread(write)
    except ApiException as exc:
        _log.error(
            "could not publish the receipt public key",
            configmap=f"{namespace}/{name}",
            keyid=signer.key_id,
            error=f"{exc.status} {exc.reason}",
        )
        return
    _log.info("receipt public key published", configmap=f"{namespace}/{name}", keyid=signer.key_id)
