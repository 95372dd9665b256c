"""The Bot Framework token verifier, check by check (auth.py), against keys made per run.

The key source is a stub that serves OpenID metadata and a JWKS from memory and counts what it
was asked, so the rate limit on refetches and the cache's refresh are pinned exactly; the real
HTTPS fetch is exercised in test_teams_invoke.py against the fake Teams.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from greenlight.adapters.teams.auth import (
    AuthError,
    BotFrameworkVerifier,
    KeysUnavailable,
    SigningKeys,
)
from greenlight.adapters.teams.serviceurls import ServiceUrls

APP_ID = "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ISSUER = "https://api.botframework.com"
SERVICE_URL = "https://smba.trafficmanager.net/emea/"
METADATA = "https://login.botframework.com/v1/.well-known/openidconfiguration"
JWKS = "https://login.botframework.com/v1/.well-known/keys"
PASSWORD = "the-app-password-0123456789-abcdefghij"

_KEYS: dict[str, rsa.RSAPrivateKey] = {}


def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """One key per name per run (RSA generation is the slow part of these tests)."""
    if name not in _KEYS:
        _KEYS[name] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _KEYS[name]


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Directory:
    """The Bot Framework's metadata and JWKS, in memory; `fail` makes every fetch fail."""

    keys: dict[str, tuple[rsa.RSAPrivateKey, list[str]]] = field(default_factory=dict)
    extra: list[dict[str, Any]] = field(default_factory=list)
    jwks_uri: str = JWKS
    fail: bool = False
    fetched: list[str] = field(default_factory=list)

    async def __call__(self, url: str) -> Mapping[str, Any]:
        self.fetched.append(url)
        if self.fail:
            raise ValueError(f"{url} answered HTTP 503")
        if url == METADATA:
            return {"issuer": ISSUER, "jwks_uri": self.jwks_uri}
        entries = [
            {
                **json.loads(RSAAlgorithm.to_jwk(key.public_key())),
                "kid": kid,
                "use": "sig",
                "endorsements": endorsements,
            }
            for kid, (key, endorsements) in self.keys.items()
        ]
        return {"keys": entries + self.extra}

    @property
    def jwks_fetches(self) -> int:
        return self.fetched.count(self.jwks_uri)


@dataclass
class Setup:
    verifier: BotFrameworkVerifier
    directory: Directory
    wall: Clock
    mono: Clock


@pytest.fixture
def setup() -> Setup:
    directory = Directory(keys={"k1": (rsa_key("k1"), ["msteams", "skype"])})
    wall, mono = Clock(time.time()), Clock()
    keys = SigningKeys(METADATA, directory, clock=mono, min_refetch_seconds=60)
    verifier = BotFrameworkVerifier(
        app_id=APP_ID,
        issuer=ISSUER,
        keys=keys,
        service_urls=ServiceUrls(["https://smba.trafficmanager.net/"]),
        clock=wall,
    )
    return Setup(verifier, directory, wall, mono)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "serviceurl": SERVICE_URL,
        "nbf": now - 60,
        "exp": now + 3600,
        "iss": ISSUER,
        "aud": APP_ID,
    }
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return values


def token(kid: str = "k1", key: Any = None, alg: str = "RS256", **changes: Any) -> str:
    signing = key if key is not None else rsa_key(kid)
    return jwt.encode(claims(**changes), signing, algorithm=alg, headers={"kid": kid})


def bearer(value: str) -> str:
    return f"Bearer {value}"


async def refused(setup: Setup, header: str) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await setup.verifier.verify(header)
    return caught.value


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- what is accepted -----------------------------------------------------------------------


async def test_genuine_token_is_accepted_with_its_service_url_and_expiry(setup: Setup) -> None:
    value = token()
    caller = await setup.verifier.verify(bearer(value))

    assert caller.service_url == SERVICE_URL
    assert caller.kid == "k1"
    assert caller.expires_at == jwt.decode(value, options={"verify_signature": False})["exp"]
    setup.verifier.check_activity(caller, service_url=SERVICE_URL, channel_id="msteams")


@pytest.mark.parametrize("offset", [-299, 299])
async def test_clock_skew_up_to_five_minutes_is_tolerated(setup: Setup, offset: int) -> None:
    now = int(time.time())
    # Expired 299 s ago, or valid in 299 s.
    value = token(exp=now + offset, nbf=now - 3600) if offset < 0 else token(nbf=now + offset)
    await setup.verifier.verify(bearer(value))


# -- the header and the algorithm -----------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer not-a-jwt",
        "Bearer a.b",
        "Bearer " + "a." * 5000,
    ],
    ids=["missing", "basic", "empty-bearer", "not-a-jws", "two-parts", "oversized"],
)
async def test_anything_but_a_bearer_jws_is_refused(setup: Setup, header: str) -> None:
    error = await refused(setup, header)
    assert error.reason == "invalid_signature"
    assert setup.directory.fetched == [], "nothing is fetched for a header that is not a JWS"


async def test_alg_none_is_refused_before_any_key_is_looked_up(setup: Setup) -> None:
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': 'k1'})}.{_b64(claims())}."

    error = await refused(setup, bearer(unsigned))

    assert "'none' is not RS256" in error.detail
    assert setup.directory.fetched == []


async def test_hs256_signed_with_the_app_password_is_refused(setup: Setup) -> None:
    forged = jwt.encode(claims(), PASSWORD, algorithm="HS256", headers={"kid": "k1"})

    error = await refused(setup, bearer(forged))

    assert "'HS256' is not RS256" in error.detail
    assert setup.directory.fetched == []


async def test_hs256_keyed_with_the_public_key_is_refused(setup: Setup) -> None:
    """The classic algorithm confusion: the verifier's RSA public key used as an HMAC secret."""
    public = rsa_key("k1").public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": "k1"})
    body = _b64(claims())
    signature = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"

    assert (await refused(setup, bearer(forged))).reason == "invalid_signature"


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256"])
async def test_other_rsa_algorithms_are_refused(setup: Setup, alg: str) -> None:
    error = await refused(setup, bearer(token(alg=alg)))
    assert f"{alg!r} is not RS256" in error.detail


async def test_es256_is_refused(setup: Setup) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    error = await refused(setup, bearer(token(key=key, alg="ES256")))
    assert "'ES256' is not RS256" in error.detail


async def test_token_without_kid_is_refused(setup: Setup) -> None:
    value = jwt.encode(claims(), rsa_key("k1"), algorithm="RS256")
    assert "kid" in (await refused(setup, bearer(value))).detail


# -- keys -----------------------------------------------------------------------------------


async def test_signature_by_another_key_under_a_published_kid_is_refused(setup: Setup) -> None:
    forged = token(kid="k1", key=rsa_key("attacker"))
    error = await refused(setup, bearer(forged))
    assert error.detail == "the token's signature does not verify"


async def test_tampered_claims_break_the_signature(setup: Setup) -> None:
    header, _body, signature = token().split(".")
    tampered = f"{header}.{_b64(claims(aud='another-bot'))}.{signature}"
    assert (
        await refused(setup, bearer(tampered))
    ).detail == "the token's signature does not verify"


async def test_unknown_kid_refetches_once_then_is_refused(setup: Setup) -> None:
    await setup.verifier.verify(bearer(token()))  # first load
    setup.mono.now += 61

    error = await refused(setup, bearer(token(kid="k-unknown", key=rsa_key("attacker"))))

    assert error.detail == "the token's signing key is not the Bot Framework's"
    assert setup.directory.jwks_fetches == 2


async def test_random_kids_cannot_make_the_verifier_hammer_the_metadata(setup: Setup) -> None:
    await setup.verifier.verify(bearer(token()))
    setup.mono.now += 61
    for n in range(50):
        await refused(setup, bearer(token(kid=f"random-{n}", key=rsa_key("attacker"))))

    assert setup.directory.jwks_fetches == 2, "one refetch per interval, whatever the kids"
    setup.mono.now += 61
    await refused(setup, bearer(token(kid="random-late", key=rsa_key("attacker"))))
    assert setup.directory.jwks_fetches == 3


async def test_rotated_key_is_found_by_one_refetch(setup: Setup) -> None:
    await setup.verifier.verify(bearer(token()))
    setup.directory.keys["k2"] = (rsa_key("k2"), ["msteams"])
    setup.mono.now += 61

    caller = await setup.verifier.verify(bearer(token(kid="k2")))

    assert caller.kid == "k2"
    assert setup.directory.jwks_fetches == 2
    await setup.verifier.verify(bearer(token(kid="k2")))
    assert setup.directory.jwks_fetches == 2, "then it is cached"


async def test_key_without_the_msteams_endorsement_is_refused(setup: Setup) -> None:
    setup.directory.keys["webchat"] = (rsa_key("webchat"), ["webchat", "directline"])

    error = await refused(setup, bearer(token(kid="webchat")))

    assert error.detail == "the signing key is not endorsed for msteams"


async def test_key_without_any_endorsement_is_refused(setup: Setup) -> None:
    jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key("bare").public_key()))
    setup.directory.extra.append({**jwk, "kid": "bare", "use": "sig"})

    assert "endorsed" in (await refused(setup, bearer(token(kid="bare")))).detail


async def test_weak_and_non_rsa_keys_in_the_jwks_are_ignored(setup: Setup) -> None:
    small = rsa_key("small", bits=1024)
    jwk = json.loads(RSAAlgorithm.to_jwk(small.public_key()))
    setup.directory.extra += [
        {**jwk, "kid": "small", "endorsements": ["msteams"]},
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0", "endorsements": ["msteams"]},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB", "endorsements": ["msteams"]},
    ]
    setup.mono.now += 61

    for kid, key in (("small", small), ("secret", PASSWORD), ("broken", rsa_key("k1"))):
        alg = "HS256" if kid == "secret" else "RS256"
        with pytest.warns(jwt.InsecureKeyLengthWarning) if kid == "small" else nullcontext():
            value = token(kid=kid, key=key, alg=alg)
        assert (await refused(setup, bearer(value))).reason


async def test_published_private_parts_are_never_used_as_a_key(setup: Setup) -> None:
    """A JWKS entry carrying `d` (a private key) is read as its public half only."""
    jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key("leaky")))
    setup.directory.extra.append({**jwk, "kid": "leaky", "endorsements": ["msteams"]})

    caller = await setup.verifier.verify(bearer(token(kid="leaky")))
    assert caller.kid == "leaky"


async def test_no_keys_at_all_is_unavailable_not_accepted(setup: Setup) -> None:
    setup.directory.fail = True

    with pytest.raises(KeysUnavailable):
        await setup.verifier.verify(bearer(token()))
    with pytest.raises(KeysUnavailable):
        await setup.verifier.verify(bearer(token()))
    assert len(setup.directory.fetched) == 1, "a failing metadata endpoint is not hammered either"


async def test_jwks_uri_must_be_https(setup: Setup) -> None:
    setup.directory.jwks_uri = "http://login.botframework.com/v1/keys"
    with pytest.raises(KeysUnavailable):
        await setup.verifier.verify(bearer(token()))


async def test_keys_are_refreshed_daily_and_kept_through_a_failed_refresh(setup: Setup) -> None:
    await setup.verifier.verify(bearer(token()))
    setup.mono.now += 24 * 3600 + 1
    setup.directory.fail = True

    await setup.verifier.verify(bearer(token()))  # refresh failed: the cached keys still count

    assert setup.directory.fetched[-1] == METADATA
    setup.mono.now += 5 * 24 * 3600
    with pytest.raises(KeysUnavailable):
        await setup.verifier.verify(bearer(token()))


def test_metadata_url_must_be_https() -> None:
    with pytest.raises(ValueError, match="https"):
        SigningKeys("http://login.botframework.com/v1/.well-known/openidconfiguration", Directory())


# -- claims ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason", "detail"),
    [
        ({"aud": "another-bot-app-id"}, "invalid_signature", "the token is for another audience"),
        ({"aud": [APP_ID, "another"]}, "invalid_signature", "the token is for another audience"),
        ({"aud": None}, "invalid_signature", "the token lacks 'aud'"),
        ({"iss": "https://sts.windows.net/evil/"}, "invalid_signature", "another issuer"),
        ({"iss": None}, "invalid_signature", "the token lacks 'iss'"),
        ({"exp": int(time.time()) - 301}, "stale_timestamp", "the token has expired"),
        ({"exp": None}, "invalid_signature", "the token lacks 'exp'"),
        # Far beyond the 5 min skew: the parameters are computed when the suite is collected.
        (
            {"nbf": int(time.time()) + 30 * 86400, "exp": int(time.time()) + 31 * 86400},
            "stale_timestamp",
            "the token is not valid yet",
        ),
        ({"serviceurl": None}, "invalid_signature", "serviceurl is not an allowed one"),
        ({"serviceurl": "https://evil.example/"}, "invalid_signature", "not an allowed one"),
        ({"serviceurl": "http://smba.trafficmanager.net/emea/"}, "invalid_signature", "allowed"),
    ],
    ids=[
        "wrong-aud",
        "aud-list",
        "no-aud",
        "wrong-iss",
        "no-iss",
        "expired",
        "no-exp",
        "not-yet-valid",
        "no-serviceurl",
        "foreign-serviceurl",
        "http-serviceurl",
    ],
)
async def test_wrong_or_missing_claims_are_refused(
    setup: Setup, changes: dict[str, Any], reason: str, detail: str
) -> None:
    error = await refused(setup, bearer(token(**changes)))
    assert (error.reason, detail in error.detail) == (reason, True), error.detail


# -- the activity against its token ---------------------------------------------------------


async def test_activity_service_url_must_equal_the_serviceurl_claim(setup: Setup) -> None:
    caller = await setup.verifier.verify(bearer(token()))
    with pytest.raises(AuthError, match="serviceUrl is not the token's serviceurl"):
        setup.verifier.check_activity(
            caller, service_url="https://smba.trafficmanager.net/amer/", channel_id="msteams"
        )


@pytest.mark.parametrize("channel", ["webchat", "directline", "", "MSTEAMS"])
async def test_activity_must_be_from_the_msteams_channel(setup: Setup, channel: str) -> None:
    caller = await setup.verifier.verify(bearer(token()))
    with pytest.raises(AuthError, match="channelId is not msteams"):
        setup.verifier.check_activity(caller, service_url=SERVICE_URL, channel_id=channel)


def test_the_app_id_is_required() -> None:
    with pytest.raises(ValueError, match="app id"):
        BotFrameworkVerifier(
            app_id="",
            issuer=ISSUER,
            keys=SigningKeys(METADATA, Directory()),
            service_urls=ServiceUrls(["https://smba.trafficmanager.net/"]),
        )
