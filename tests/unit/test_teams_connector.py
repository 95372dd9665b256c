"""The Bot Connector client and the bot's tokens (teams/connector.py) against the fake Teams.

msal talks to the fake's Entra ID over HTTPS (the run's own CA), so these tests pin the real
client-credentials exchange, the token cache, and where the token is (and is not) sent.
"""

from __future__ import annotations

import datetime
import email.utils
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from tests.fakes.teams import CONVERSATION, TENANT_ID, FakeTeams

from greenlight.adapters.teams.connector import (
    AppTokens,
    BotConnector,
    ConnectorError,
    Delivery,
    RetryPolicy,
    _retry_after,
)
from greenlight.adapters.teams.serviceurls import ServiceUrls

FAST = RetryPolicy(max_retries=3, backoff_factor=0.01, read_timeout=0.4, connect_timeout=1.0)
MESSAGE = {"type": "message", "text": "hello"}


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    teams: FakeTeams
    tokens: AppTokens
    connector: BotConnector
    clock: Clock


def tokens_for(teams: FakeTeams, credential: object, clock: Clock | None = None) -> AppTokens:
    return AppTokens(
        app_id=teams.app_id,
        credential=credential,  # type: ignore[arg-type]
        authority=f"{teams.authority_url}/{TENANT_ID}",
        scope="https://api.botframework.com/.default",
        verify=str(teams.ca_file),
        clock=clock or time.monotonic,
    )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with FakeTeams(tmp_path) as teams:
        clock = Clock(1000.0)
        tokens = tokens_for(teams, teams.app_password, clock)
        connector = BotConnector(
            tokens, ServiceUrls([teams.base_url + "/"]), FAST, ssl_context=teams.client_ssl()
        )
        try:
            yield Harness(teams, tokens, connector, clock)
        finally:
            await connector.close()


async def test_send_posts_with_the_bots_token_and_returns_the_activity_id(harness: Harness) -> None:
    activity_id = await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)

    card = harness.teams.cards[activity_id]
    assert (card.conversation, card.activity) == (CONVERSATION, MESSAGE)
    (token,) = harness.teams.calls_to("token")
    assert token.status == 200
    assert token.body["client_secret"] == "<redacted>", "the fake records no secret"


async def test_the_token_is_cached_until_five_minutes_before_it_expires(harness: Harness) -> None:
    for _ in range(3):
        await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)
    assert harness.tokens.acquired == 1

    harness.clock.now += harness.teams.token_lifetime - 301
    await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)
    assert harness.tokens.acquired == 1
    harness.clock.now += 2
    await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)
    assert harness.tokens.acquired == 2


async def test_a_refused_token_is_dropped_and_fetched_again_once(harness: Harness) -> None:
    await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)
    harness.teams.expire_tokens()

    await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)

    assert [c.status for c in harness.teams.calls_to("send")] == [201, 401, 201]
    assert harness.tokens.acquired == 2


async def test_429_waits_for_retry_after_then_succeeds(harness: Harness) -> None:
    harness.teams.fail("send", 429, times=2, retry_after=0.5)

    await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)

    attempts = harness.teams.calls_to("send")
    assert [c.status for c in attempts] == [429, 429, 201]
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.45 for gap in gaps), gaps


async def test_a_429_storm_ends_as_not_delivered(harness: Harness) -> None:
    harness.teams.fail("send", 429, times=10, retry_after=0.01)

    with pytest.raises(ConnectorError) as caught:
        await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)

    assert (caught.value.status, caught.value.delivery) == (429, Delivery.NOT_DELIVERED)
    assert len(harness.teams.calls_to("send")) == 1 + FAST.max_retries
    assert harness.teams.cards == {}


async def test_retry_after_beyond_the_cap_is_not_waited_for(harness: Harness) -> None:
    harness.teams.fail("send", 429, retry_after=3600)
    started = time.monotonic()
    with pytest.raises(ConnectorError):
        await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)
    assert time.monotonic() - started < 5


async def test_5xx_backs_off_and_retries(harness: Harness) -> None:
    harness.teams.fail("update", 502, times=2)
    activity_id = await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)

    await harness.connector.update(harness.teams.service_url, CONVERSATION, activity_id, MESSAGE)

    assert [c.status for c in harness.teams.calls_to("update")] == [502, 502, 200]
    assert harness.teams.cards[activity_id].edited


async def test_an_outage_is_not_delivered(harness: Harness) -> None:
    harness.teams.outage = True
    with pytest.raises(ConnectorError) as caught:
        await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)
    assert (caught.value.status, caught.value.delivery) == (503, Delivery.NOT_DELIVERED)


async def test_a_post_that_may_have_arrived_is_never_repeated(harness: Harness) -> None:
    """The Bot Connector took the post and did not answer in time: its outcome is unknown."""
    harness.teams.respond_late("send", 0.8)

    with pytest.raises(ConnectorError) as caught:
        await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)

    assert caught.value.delivery is Delivery.UNKNOWN
    assert len(harness.teams.calls_to("send")) == 1
    assert len(harness.teams.cards) == 1, "the card exists; only its id is unknown"


async def test_an_update_without_an_answer_is_repeated(harness: Harness) -> None:
    activity_id = await harness.connector.send(harness.teams.service_url, CONVERSATION, MESSAGE)
    harness.teams.respond_late("update", 0.8)

    await harness.connector.update(harness.teams.service_url, CONVERSATION, activity_id, MESSAGE)

    assert len(harness.teams.calls_to("update")) == 2


async def test_an_unreachable_connector_is_not_delivered(tmp_path: Path) -> None:
    async with FakeTeams(tmp_path) as teams:
        closed = "https://127.0.0.1:9/teams/"
        tokens = tokens_for(teams, teams.app_password)
        connector = BotConnector(
            tokens, ServiceUrls(["https://127.0.0.1:9/"]), FAST, ssl_context=teams.client_ssl()
        )
        try:
            with pytest.raises(ConnectorError) as caught:
                await connector.send(closed, CONVERSATION, MESSAGE)
        finally:
            await connector.close()
    assert caught.value.delivery is Delivery.NOT_DELIVERED
    assert caught.value.code.startswith("unreachable")


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/teams/",
        "https://127.0.0.1.evil.example/teams/",
        "http://127.0.0.1/teams/",
    ],
)
async def test_the_token_is_never_sent_outside_the_allowed_service_urls(
    harness: Harness, url: str
) -> None:
    with pytest.raises(ConnectorError) as caught:
        await harness.connector.send(url, CONVERSATION, MESSAGE)

    assert caught.value.code == "untrusted_service_url"
    assert harness.teams.calls == [], "not even a token was asked for"


async def test_redirects_are_not_followed(harness: Harness) -> None:
    harness.teams.fail("member", 307)
    with pytest.raises(ConnectorError) as caught:
        await harness.connector.member(harness.teams.service_url, CONVERSATION, "29:someone")
    assert caught.value.status == 307
    assert len(harness.teams.calls_to("member")) == 1


async def test_wrong_credentials_get_no_token_and_send_nothing(tmp_path: Path) -> None:
    async with FakeTeams(tmp_path) as teams:
        tokens = tokens_for(teams, "not-the-password")
        connector = BotConnector(
            tokens,
            ServiceUrls([teams.base_url + "/"]),
            RetryPolicy(max_retries=1, backoff_factor=0.01),
            ssl_context=teams.client_ssl(),
        )
        try:
            with pytest.raises(ConnectorError) as caught:
                await connector.send(teams.service_url, CONVERSATION, MESSAGE)
        finally:
            await connector.close()
        assert caught.value.code.startswith("no_token")
        assert "not-the-password" not in str(caught.value)
        assert teams.calls_to("send") == []


async def test_a_certificate_credential_gets_a_token(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "greenlight-bot")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    credential = {
        "private_key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
    }
    async with FakeTeams(tmp_path) as teams:
        teams.register_certificate(cert)
        tokens = tokens_for(teams, credential)
        assert (await tokens.token()).startswith("fake-access-")
        (call,) = teams.calls_to("token")
        assert call.body["client_assertion"] == "<redacted>"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    policy = RetryPolicy(max_retry_after=60)
    later = email.utils.format_datetime(
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30), usegmt=True
    )

    assert _retry_after({"Retry-After": "2"}, policy) == 2.0
    assert 28 <= (_retry_after({"retry-after": later}, policy) or 0) <= 31
    assert _retry_after({}, policy) == 1.0
    assert _retry_after({"Retry-After": "nonsense"}, policy) == 1.0
    assert _retry_after({"Retry-After": "-5"}, policy) == 0.0
    assert _retry_after({"Retry-After": "61"}, policy) is None
