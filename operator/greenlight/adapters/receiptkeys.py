"""The operator's receipt signing key, and the ConfigMap that publishes the public keys.

The private key is a PEM file (PKCS#8): in a cluster the chart's Secret, generated once and kept;
locally (`make run`, tests) created once next to the audit file, mode 0600. The public keys are
published in a ConfigMap, one entry `<keyid>.pem` per key: the operator adds its current key at
start and never removes one, so receipts signed by an earlier key stay verifiable after a
rotation (old keys listed in the chart's values are rendered into the same ConfigMap).
"""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from greenlight.core.dsse import Signer, parse_private_key, public_pem
from greenlight.kube import ApiError, Conflict, Kube, NotFound, configmaps

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


async def publish(kube: Kube, namespace: str, name: str, signer: Signer) -> None:
    """Add the current public key to the ConfigMap `namespace/name` (created if absent).
    A failure is logged, not fatal: receipts are still signed, and the key can be read from
    the key file (`greenlight receipt keys --key-file`)."""
    pem = public_pem(signer.private_key.public_key())
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {entry_name(signer): pem},
    }
    try:
        await kube.merge_or_create(configmaps(namespace), body)
    except (ApiError, Conflict, NotFound, aiohttp.ClientError, TimeoutError) as exc:
        _log.error(
            "could not publish the receipt public key",
            configmap=f"{namespace}/{name}",
            keyid=signer.key_id,
            error=str(exc),
        )
        return
    _log.info("receipt public key published", configmap=f"{namespace}/{name}", keyid=signer.key_id)
