"""Button tokens: the opaque values behind the Approve and Deny buttons.

A button value is shown to Slack and comes back in every click, so it must not be something a
person could write by hand (a request name): anyone able to send a signed payload — or a
compromised workspace integration — could then decide any request. Instead each button carries

    gl1.<base64url(action byte | 16-byte random nonce | request uid) | HMAC-SHA256 tag>

The tag covers a domain label, the action, the nonce and the uid, under a key derived (HKDF) from
the Slack signing secret. Every replica holding the Secret verifies a token without shared
state; changing a single bit, swapping the action, or pointing it at another request uid breaks
the tag. The nonce makes two messages for the same request carry different tokens, so a value
copied from one message says nothing about another.

A token is a capability to *attempt* one action on one request. Whether the attempt counts is
decided by the request itself: a person's decision is recorded once, and a terminal request
refuses everything — which is what makes a click single-use (see docs/slack.md).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from greenlight.adapters.chat import b64url, from_b64url
from greenlight.core.model import Action

_PREFIX = "gl1."
_DOMAIN = b"greenlight/slack-button/v1\x00"
_NONCE_BYTES = 16
_TAG_BYTES = 32
_ACTION_CODES: dict[Action, int] = {Action.APPROVE: 1, Action.DENY: 2}
_ACTIONS_BY_CODE = {code: action for action, code in _ACTION_CODES.items()}
# Slack caps a button value at 2,000 characters; a Kubernetes uid is 36.
_MAX_UID_BYTES = 256


class InvalidToken(Exception):
    """The value is not a token this operator minted (malformed, tampered or another key)."""


@dataclass(frozen=True)
class ButtonToken:
    """What a verified token grants: one action on the request with this uid."""

    uid: str
    action: Action
    nonce: str  # hex; identifies the message the button belonged to in audit records


class TokenCodec:
    """Mints and verifies button tokens with a key derived from the signing secret."""

    def __init__(self, signing_secret: str) -> None:
        if not signing_secret:
            raise ValueError("the Slack signing secret is required to mint button tokens")
        self._key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"greenlight",
            info=b"slack button token key v1",
        ).derive(signing_secret.encode())

    def mint(self, uid: str, action: Action) -> str:
        """A fresh token for `action` on the request `uid`."""
        if action not in _ACTION_CODES:
            raise ValueError(f"buttons exist for approve and deny only, not {action.value!r}")
        uid_bytes = uid.encode()
        if not uid_bytes or len(uid_bytes) > _MAX_UID_BYTES:
            raise ValueError(f"request uid must be 1..{_MAX_UID_BYTES} bytes, got {len(uid_bytes)}")
        body = bytes([_ACTION_CODES[action]]) + secrets.token_bytes(_NONCE_BYTES) + uid_bytes
        return _PREFIX + b64url(body + self._tag(body))

    def verify(self, token: str) -> ButtonToken:
        """The grant inside `token`; raises InvalidToken unless this key minted it unchanged."""
        if not token.startswith(_PREFIX):
            raise InvalidToken("not a Greenlight button token")
        try:
            raw = from_b64url(token[len(_PREFIX) :])
        except (binascii.Error, ValueError) as exc:
            raise InvalidToken("token is not valid base64url") from exc
        if len(raw) < 1 + _NONCE_BYTES + 1 + _TAG_BYTES:
            raise InvalidToken("token is too short")
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise InvalidToken("token signature does not match")
        action = _ACTIONS_BY_CODE.get(body[0])
        if action is None:
            raise InvalidToken("token names an unknown action")
        nonce = body[1 : 1 + _NONCE_BYTES]
        try:
            uid = body[1 + _NONCE_BYTES :].decode()
        except UnicodeDecodeError as exc:
            raise InvalidToken("token uid is not UTF-8") from exc
        return ButtonToken(uid=uid, action=action, nonce=nonce.hex())

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, _DOMAIN + body, hashlib.sha256).digest()
