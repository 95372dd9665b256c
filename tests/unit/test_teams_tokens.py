"""Card action tokens (teams/tokens.py): opaque, bound to action, request uid and planDigest."""

from __future__ import annotations

import base64

import pytest

from greenlight.adapters.teams.tokens import CardTokens, InvalidToken
from greenlight.core.model import Action

KEY = b"k" * 32
UID = "2b9c6a3e-5f1d-4c1e-9a8b-0d7e6f5a4b3c"
DIGEST = "sha256:" + "ab" * 32


def test_a_minted_token_verifies_to_its_grant() -> None:
    codec = CardTokens(KEY)
    grant = codec.verify(codec.mint(UID, Action.DENY, DIGEST))

    assert (grant.uid, grant.action, grant.plan_digest) == (UID, Action.DENY, DIGEST)
    assert len(grant.nonce) == 32


def test_tokens_are_opaque_and_differ_per_card() -> None:
    codec = CardTokens(KEY)
    first, second = codec.mint(UID, Action.APPROVE, DIGEST), codec.mint(UID, Action.APPROVE, DIGEST)

    assert first != second
    assert UID not in first
    assert first.startswith("gt1.")


def test_every_changed_byte_is_refused() -> None:
    codec = CardTokens(KEY)
    token = codec.mint(UID, Action.APPROVE, DIGEST)
    raw = bytearray(base64.urlsafe_b64decode(token[4:] + "=="))
    for index in range(len(raw)):
        changed = bytearray(raw)
        changed[index] ^= 0x01
        forged = "gt1." + base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode()
        with pytest.raises(InvalidToken):
            codec.verify(forged)


def test_a_token_of_another_key_is_refused() -> None:
    token = CardTokens(b"o" * 32).mint(UID, Action.APPROVE, DIGEST)
    with pytest.raises(InvalidToken, match="signature"):
        CardTokens(KEY).verify(token)


@pytest.mark.parametrize(
    "value",
    ["", "gl1.abc", "gt1.", "gt1.!!!", "gt1.AAAA", "gt1." + "A" * 600, "gt1.é"],
    ids=["empty", "slack-prefix", "no-body", "not-base64", "short", "long", "non-ascii"],
)
def test_values_that_are_no_token_are_refused(value: str) -> None:
    with pytest.raises(InvalidToken):
        CardTokens(KEY).verify(value)


def test_non_canonical_base64_is_refused() -> None:
    codec = CardTokens(KEY)
    token = codec.mint(UID, Action.APPROVE, DIGEST)
    with pytest.raises(InvalidToken):
        codec.verify(token + "=")


@pytest.mark.parametrize("digest", ["", "sha256:abc", "md5:" + "ab" * 16, "sha256:" + "zz" * 32])
def test_minting_needs_a_sha256_plan_digest(digest: str) -> None:
    with pytest.raises(ValueError, match="plan digest"):
        CardTokens(KEY).mint(UID, Action.APPROVE, digest)


def test_cards_offer_approve_and_deny_only() -> None:
    with pytest.raises(ValueError, match="approve and deny"):
        CardTokens(KEY).mint(UID, Action.CANCEL, DIGEST)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        CardTokens(b"short")
