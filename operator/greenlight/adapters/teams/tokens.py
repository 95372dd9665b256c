"""Card tokens: the opaque values behind a card's Approve and Deny actions.

The same design as the Slack button tokens (adapters/slack/tokens.py), bound to one more thing.
Each action carries

    gt1.<base64url(action byte | 16-byte nonce | 32-byte plan digest | request uid) | HMAC tag>

The tag (HMAC-SHA256) covers a domain label and everything before it, under a key derived (HKDF)
from the operator's own record key, which every replica shares; so a token survives a rotation
of the bot's app password, and any replica verifies it without shared state. Changing one bit,
swapping the action, pointing it at another request uid or at another plan breaks the tag.

A token is a capability to *attempt* one action on one request as its plan was when the card
was posted: the click handler refuses it unless the request's `planDigest` is the one the token
names. Whether an attempt counts is decided by the request: a person's decision is recorded
once and a terminal request refuses everything, which makes every click single-use (a second
click by the same person is answered "already recorded"; any click after the end "already
<phase>"). docs/teams.md says so.
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

_PREFIX = "gt1."
_DOMAIN = b"greenlight/teams-card-action/v1\x00"
_NONCE_BYTES = 16
_DIGEST_BYTES = 32
_TAG_BYTES = 32
_DIGEST_PREFIX = "sha256:"
_ACTION_CODES: dict[Action, int] = {Action.APPROVE: 1, Action.DENY: 2}
_ACTIONS_BY_CODE = {code: action for action, code in _ACTION_CODES.items()}
_MAX_UID_BYTES = 128
_HEAD = 1 + _NONCE_BYTES + _DIGEST_BYTES


class InvalidToken(Exception):
    """The value is not a token this key minted unchanged."""


@dataclass(frozen=True)
class CardGrant:
    """What a verified token grants: one action on request `uid` whose plan is `plan_digest`."""

    uid: str
    action: Action
    plan_digest: str  # "sha256:<hex>"
    nonce: str  # hex; names the card in audit records


class CardTokens:
    """Mints and verifies card action tokens."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the card token key must be at least 16 bytes")
        self._key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"greenlight",
            info=b"teams card token key v1",
        ).derive(key)

    def mint(self, uid: str, action: Action, plan_digest: str) -> str:
        """A fresh token for `action` on the request `uid` with plan `plan_digest`."""
        if action not in _ACTION_CODES:
            raise ValueError(f"cards offer approve and deny only, not {action.value!r}")
        uid_bytes = uid.encode()
        if not uid_bytes or len(uid_bytes) > _MAX_UID_BYTES:
            raise ValueError(f"request uid must be 1..{_MAX_UID_BYTES} bytes, got {len(uid_bytes)}")
        body = (
            bytes([_ACTION_CODES[action]])
            + secrets.token_bytes(_NONCE_BYTES)
            + _digest_bytes(plan_digest)
            + uid_bytes
        )
        return _PREFIX + b64url(body + self._tag(body))

    def verify(self, token: str) -> CardGrant:
        """The grant inside `token`; raises InvalidToken unless this key minted it unchanged."""
        if not token.startswith(_PREFIX) or len(token) > 512:
            raise InvalidToken("not a Greenlight card token")
        try:
            raw = from_b64url(token[len(_PREFIX) :])
        except (binascii.Error, ValueError) as exc:
            raise InvalidToken("token is not valid base64url") from exc
        if len(raw) < _HEAD + 1 + _TAG_BYTES:
            raise InvalidToken("token is too short")
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise InvalidToken("token signature does not match")
        action = _ACTIONS_BY_CODE.get(body[0])
        if action is None:
            raise InvalidToken("token names an unknown action")
        nonce = body[1 : 1 + _NONCE_BYTES]
        digest = body[1 + _NONCE_BYTES : _HEAD]
        try:
            uid = body[_HEAD:].decode()
        except UnicodeDecodeError as exc:
            raise InvalidToken("token uid is not UTF-8") from exc
        return CardGrant(
            uid=uid, action=action, plan_digest=_DIGEST_PREFIX + digest.hex(), nonce=nonce.hex()
        )

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, _DOMAIN + body, hashlib.sha256).digest()


def _digest_bytes(plan_digest: str) -> bytes:
    hexdigest = plan_digest.removeprefix(_DIGEST_PREFIX)
    try:
        raw = bytes.fromhex(hexdigest)
    except ValueError:
        raw = b""
    if not plan_digest.startswith(_DIGEST_PREFIX) or len(raw) != _DIGEST_BYTES:
        raise ValueError(f"plan digest must be sha256:<64 hex digits>, got {plan_digest!r}")
    return raw
