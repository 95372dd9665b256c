"""Button tokens: opaque, bound to one request uid and one action, refused when altered."""

import base64

import pytest

from greenlight.adapters.slack.tokens import InvalidToken, TokenCodec
from greenlight.core.model import Action

UID = "2b9c6a3e-5f1d-4c1e-9a8b-0d7e6f5a4b3c"


def test_token_round_trips_to_its_uid_and_action() -> None:
    codec = TokenCodec("signing-secret")
    grant = codec.verify(codec.mint(UID, Action.DENY))
    assert (grant.uid, grant.action) == (UID, Action.DENY)


def test_token_does_not_show_the_request_uid_or_name() -> None:
    token = TokenCodec("signing-secret").mint(UID, Action.APPROVE)
    assert UID not in token
    assert "destroy" not in token


def test_tokens_for_the_same_request_differ() -> None:
    codec = TokenCodec("signing-secret")
    assert codec.mint(UID, Action.APPROVE) != codec.mint(UID, Action.APPROVE)


def test_token_from_another_signing_secret_is_refused() -> None:
    token = TokenCodec("other-secret").mint(UID, Action.APPROVE)
    with pytest.raises(InvalidToken):
        TokenCodec("signing-secret").verify(token)


@pytest.mark.parametrize("position", [4, 10, 30, 60, -5])
def test_any_changed_character_is_refused(position: int) -> None:
    codec = TokenCodec("signing-secret")
    token = codec.mint(UID, Action.APPROVE)
    index = position % len(token)
    swapped = "A" if token[index] != "A" else "B"
    with pytest.raises(InvalidToken):
        codec.verify(token[:index] + swapped + token[index + 1 :])


def test_token_rewritten_to_another_action_is_refused() -> None:
    codec = TokenCodec("signing-secret")
    token = codec.mint(UID, Action.APPROVE)
    raw = bytearray(base64.urlsafe_b64decode(token[4:] + "=" * (-len(token[4:]) % 4)))
    raw[0] = 2  # the deny code, tag unchanged
    forged = "gl1." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="signature"):
        codec.verify(forged)


@pytest.mark.parametrize("value", ["", "payments/destroy-prod", "gl1.", "gl1.!!!", "gl1.AAAA"])
def test_values_that_are_not_tokens_are_refused(value: str) -> None:
    with pytest.raises(InvalidToken):
        TokenCodec("signing-secret").verify(value)


def test_cancel_has_no_button_token() -> None:
    with pytest.raises(ValueError, match="approve and deny"):
        TokenCodec("signing-secret").mint(UID, Action.CANCEL)
