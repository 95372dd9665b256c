"""DSSE v1 envelopes (github.com/secure-systems-lab/dsse), signed with Ed25519.

The signature covers the pre-authentication encoding `pae(payloadType, payload)`, never the JSON
around it, so nothing in the envelope can be changed without breaking it. A key id is the
SHA-256 (hex) of the raw 32-byte public key. Ed25519 is deterministic: signing the same payload
again gives the same envelope.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

_PEM_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body,
    lengths as ASCII decimal byte counts."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(public_key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte public key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope; `payload` is the serialized statement (bytes, as signed)."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    @property
    def digest(self) -> str:
        """`sha256:<hex>` of the payload: what the audit log records of a receipt."""
        return "sha256:" + hashlib.sha256(self.payload).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }

    @classmethod
    def from_json(cls, data: object) -> Envelope:
        """Raise ValueError saying what is wrong when `data` is not a DSSE envelope."""
        if not isinstance(data, Mapping):
            raise ValueError("the receipt is not a JSON object (a DSSE envelope)")
        kind, payload, signatures = (
            data.get("payloadType"),
            data.get("payload"),
            data.get("signatures"),
        )
        if not isinstance(kind, str) or not isinstance(payload, str):
            raise ValueError("the receipt needs string fields payloadType and payload")
        if not isinstance(signatures, list) or not signatures:
            raise ValueError("the receipt carries no signatures")
        parsed = []
        for entry in signatures:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("sig"), str):
                raise ValueError("a receipt signature needs a string field sig")
            parsed.append(Signature(str(entry.get("keyid") or ""), _b64(entry["sig"], "sig")))
        return cls(kind, _b64(payload, "payload"), tuple(parsed))


def _b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the receipt's {field} is not base64") from None


@dataclass(frozen=True)
class Signer:
    """The operator's receipt key."""

    private_key: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.private_key.public_key())

    def sign(self, payload_type: str, payload: bytes) -> Envelope:
        sig = self.private_key.sign(pae(payload_type, payload))
        return Envelope(payload_type, payload, (Signature(self.key_id, sig),))


def valid_signature(public_key: Ed25519PublicKey, sig: bytes, message: bytes) -> bool:
    try:
        public_key.verify(sig, message)
    except InvalidSignature:
        return False
    return True


def public_pem(public_key: Ed25519PublicKey) -> str:
    """A public key as PEM (SubjectPublicKeyInfo), the form keys are published in."""
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def parse_public_keys(text: str) -> dict[str, Ed25519PublicKey]:
    """Key id -> key for every PEM public key in `text` (a bundle, e.g. `greenlight receipt
    keys`' output). Raise ValueError when a block is not an Ed25519 public key, or none is there."""
    keys: dict[str, Ed25519PublicKey] = {}
    for block in _PEM_BLOCK.findall(text):
        try:
            key = load_pem_public_key(block.encode("ascii"))
        except ValueError as exc:
            raise ValueError(f"a PEM block is not a public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("a published receipt key must be Ed25519")
        keys[key_id(key)] = key
    if not keys:
        raise ValueError("no PEM public key (-----BEGIN PUBLIC KEY-----) found")
    return keys


def parse_private_key(data: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8, as `openssl genpkey -algorithm ed25519` and
    Helm's `genPrivateKey "ed25519"` write it)."""
    key = load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the receipt key must be an Ed25519 private key (PEM, PKCS#8)")
    return key
