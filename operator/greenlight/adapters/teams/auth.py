"""Inbound authentication: is this activity from the Bot Framework, for this bot, for Teams?

Every request to the messaging endpoint carries `Authorization: Bearer <JWT>` issued by the Bot
Framework. It is checked before the body is read, and the checks fail closed, in this order:

1. the header is a bearer token of bounded size, a JWS with three parts;
2. its algorithm is RS256 (`none`, HS*, ES*, PS* are refused before any key is looked up: an
   HS256 token "signed" with the app password or with the public key is never tried);
3. its `kid` names a key of the Bot Framework's JWKS, found through the OpenID metadata
   (GREENLIGHT_TEAMS_OPENID_METADATA_URL → `jwks_uri`). The keys are cached and refreshed
   daily; an unknown kid triggers one refetch, at most once per `min_refetch_seconds`, so
   random kids cannot make Greenlight hammer the metadata endpoint;
4. that key is endorsed for the `msteams` channel (the JWKS entry's `endorsements`);
5. the RS256 signature verifies with that key (PyJWT), `iss` is the Bot Framework issuer
   (GREENLIGHT_TEAMS_TOKEN_ISSUER), `aud` is exactly the bot's app id, `exp` is required and,
   like `nbf` and `iat`, checked with 5 minutes of clock skew;
6. its `serviceurl` claim is under an allowed Bot Connector prefix (serviceurls.py).

Then, once the bounded body is parsed, `check_activity` requires the activity's `channelId` to
be `msteams` (the endorsed channel) and its `serviceUrl` to equal the token's `serviceurl`.

The token authenticates the sender, not the body (the Bot Framework's design); TLS protects it in
transit, and its lifetime (about an hour) bounds a replay, which activity ids de-duplicate
within (invoke.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from greenlight.adapters.bodies import TooLarge, read_bounded
from greenlight.adapters.teams.serviceurls import ServiceUrls

TEAMS_CHANNEL = "msteams"
ALGORITHM = "RS256"
CLOCK_SKEW_SECONDS = 300
MAX_TOKEN_CHARS = 8192
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_KEYS = 64
MIN_KEY_BITS = 2048

log = structlog.get_logger(__name__)

Fetch = Callable[[str], Awaitable[Mapping[str, Any]]]


class AuthError(Exception):
    """The request is not authentic. `reason` is the refusal's metric label
    (`invalid_signature`, `stale_timestamp`); `detail` names the check that failed."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class KeysUnavailable(Exception):
    """No signing keys could be loaded: nothing can be verified until the metadata answers."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: rsa.RSAPublicKey
    endorsements: frozenset[str]


@dataclass(frozen=True)
class Caller:
    """A verified Bot Framework token: who may be answered, and until when it counts."""

    service_url: str
    expires_at: float  # the token's `exp`, epoch seconds
    kid: str


class SigningKeys:
    """The Bot Framework's signing keys, from its OpenID metadata, cached."""

    def __init__(
        self,
        metadata_url: str,
        fetch: Fetch,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = 24 * 3600,
        max_age_seconds: float = 5 * 24 * 3600,
        min_refetch_seconds: float = 60.0,
    ) -> None:
        if not metadata_url.startswith("https://"):
            raise ValueError(f"the OpenID metadata URL must be https://, got {metadata_url!r}")
        self._metadata_url = metadata_url
        self._fetch = fetch
        self._clock = clock
        self._refresh = refresh_seconds
        self._max_age = max_age_seconds
        self._min_refetch = min_refetch_seconds
        self._keys: dict[str, SigningKey] = {}
        self._loaded_at: float | None = None  # when the cached keys were fetched
        self._tried_at: float | None = None  # when a fetch was last attempted
        self._lock = asyncio.Lock()
        self.fetches = 0  # documents fetched successfully (metadata + JWKS count as one)

    async def key(self, kid: str) -> SigningKey | None:
        """The key named `kid`, refetching (rate-limited) when it is unknown or the cache is
        stale; None when the Bot Framework does not publish it. Raises KeysUnavailable when no
        usable keys are known at all."""
        now = self._clock()
        if self._fresh(now) and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            now = self._clock()
            stale = not self._fresh(now)
            if (stale or kid not in self._keys) and self._may_fetch(now):
                await self._reload(now)
            if not self._usable(self._clock()):
                raise KeysUnavailable("the Bot Framework signing keys could not be loaded")
            return self._keys.get(kid)

    def _fresh(self, now: float) -> bool:
        return self._loaded_at is not None and now - self._loaded_at < self._refresh

    def _usable(self, now: float) -> bool:
        return self._loaded_at is not None and now - self._loaded_at < self._max_age

    def _may_fetch(self, now: float) -> bool:
        return self._tried_at is None or now - self._tried_at >= self._min_refetch

    async def _reload(self, now: float) -> None:
        self._tried_at = now
        try:
            metadata = await self._fetch(self._metadata_url)
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
                raise ValueError("the OpenID metadata has no https jwks_uri")
            keys = _parse_jwks(await self._fetch(jwks_uri))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("bot framework signing keys not refreshed", error=str(exc)[:200])
            return
        if not keys:
            log.warning("bot framework JWKS holds no usable RS256 key; keeping the cached keys")
            return
        self._keys = keys
        self._loaded_at = now
        self.fetches += 1


class BotFrameworkVerifier:
    """Verifies the bearer token of one request (see the module docstring for the checks)."""

    def __init__(
        self,
        *,
        app_id: str,
        issuer: str,
        keys: SigningKeys,
        service_urls: ServiceUrls,
        clock: Callable[[], float] = time.time,
        leeway: int = CLOCK_SKEW_SECONDS,
    ) -> None:
        if not app_id:
            raise ValueError("the bot's app id is required to verify tokens")
        self._app_id = app_id
        self._issuer = issuer
        self._keys = keys
        self._service_urls = service_urls
        self._clock = clock
        self._leeway = leeway

    async def verify(self, authorization: str) -> Caller:
        """The verified caller; raises AuthError (refused) or KeysUnavailable (cannot tell)."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("invalid_signature", "no bearer token in the Authorization header")
        token = token.strip()
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise AuthError("invalid_signature", "the bearer token is not a compact JWS")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_signature", "the token header is unreadable") from exc
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise AuthError("invalid_signature", f"algorithm {str(alg)[:20]!r} is not RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= 128:
            raise AuthError("invalid_signature", "the token names no signing key (kid)")
        key = await self._keys.key(kid)
        if key is None:
            raise AuthError(
                "invalid_signature", "the token's signing key is not the Bot Framework's"
            )
        if TEAMS_CHANNEL not in key.endorsements:
            raise AuthError("invalid_signature", "the signing key is not endorsed for msteams")
        claims = self._decode(token, key)
        service_url = claims.get("serviceurl")
        if not isinstance(service_url, str) or not self._service_urls.allows(service_url):
            raise AuthError("invalid_signature", "the token's serviceurl is not an allowed one")
        return Caller(service_url=service_url, expires_at=float(claims["exp"]), kid=kid)

    def check_activity(self, caller: Caller, *, service_url: str, channel_id: str) -> None:
        """The activity is the one the token speaks for; raises AuthError otherwise."""
        if channel_id != TEAMS_CHANNEL:
            raise AuthError("invalid_signature", "the activity's channelId is not msteams")
        if service_url != caller.service_url:
            raise AuthError(
                "invalid_signature", "the activity's serviceUrl is not the token's serviceurl"
            )

    def _decode(self, token: str, key: SigningKey) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                audience=self._app_id,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"], "strict_aud": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("stale_timestamp", "the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("stale_timestamp", "the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("invalid_signature", "the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("invalid_signature", "the token has another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("invalid_signature", f"the token lacks {exc.claim!r}") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("invalid_signature", "the token's signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_signature", "the token is malformed") from exc
        return claims


def _parse_jwks(document: Mapping[str, Any]) -> dict[str, SigningKey]:
    """The RSA signature keys of a JWKS (at most MAX_KEYS); other entries are skipped."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("the JWKS has no keys list")
    keys: dict[str, SigningKey] = {}
    for entry in entries[:MAX_KEYS]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("use", "sig") != "sig":
            continue
        public = {k: v for k, v in entry.items() if k not in {"d", "p", "q", "dp", "dq", "qi"}}
        try:
            parsed = RSAAlgorithm.from_jwk(public)
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
        if not isinstance(parsed, rsa.RSAPublicKey) or parsed.key_size < MIN_KEY_BITS:
            continue
        endorsements = entry.get("endorsements") or []
        if not isinstance(endorsements, list):
            continue
        keys[kid] = SigningKey(
            kid=kid,
            key=parsed,
            endorsements=frozenset(e for e in endorsements if isinstance(e, str)),
        )
    return keys


def http_fetch(session: Callable[[], aiohttp.ClientSession], timeout: float = 10.0) -> Fetch:
    """A fetcher for JSON documents over https, bounded in size and time."""

    async def fetch(url: str) -> Mapping[str, Any]:
        if not url.startswith("https://"):
            raise ValueError(f"refusing to fetch {url[:100]!r}: not https")
        async with session().get(
            url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as response:
            if response.status != 200:
                raise ValueError(f"{url[:100]} answered HTTP {response.status}")
            try:
                body = await read_bounded(response.content, MAX_DOCUMENT_BYTES)
            except TooLarge as exc:
                raise ValueError(f"{url[:100]} answered {exc}") from None
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{url[:100]} answered no JSON") from exc
        if not isinstance(document, dict):
            raise ValueError(f"{url[:100]} answered no JSON object")
        return document

    return fetch
