"""Outbound: the Bot Connector REST API, with the bot's own token, bounded retries.

Tokens. `AppTokens` asks Microsoft Entra ID for a client-credentials token (msal's
ConfidentialClientApplication, single-tenant: the authority is
`GREENLIGHT_TEAMS_AUTHORITY_URL/<tenant id>`, the scope GREENLIGHT_TEAMS_TOKEN_SCOPE), with the
app password or a certificate. The token is cached until five minutes before it expires; a
401 from the Bot Connector drops it and asks once more.

Where the token goes. Every call's URL must lie under an allowed Bot Connector prefix
(serviceurls.py) before the Authorization header is attached; redirects are not followed.

Retries. A 429 waits for `Retry-After` (seconds or an HTTP date, capped), a 5xx or a failed
connection backs off exponentially with jitter; a call makes at most `1 + max_retries`
attempts. A POST (send, reply) is never repeated once its request may have reached the
service — a read timeout or a dropped connection after sending — because the Bot Connector
has no idempotency key: the error then says the delivery is *unknown*, and the notifier
decides (notifier.py). Every error says whether the call was certainly not delivered.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import functools
import json
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import msal  # type: ignore[import-untyped]
import requests
import structlog
from opentelemetry import trace

from greenlight.adapters.bodies import TooLarge, read_bounded
from greenlight.adapters.teams.serviceurls import ServiceUrls, UntrustedServiceUrl

MAX_RESPONSE_BYTES = 1024 * 1024
TOKEN_EARLY_REFRESH_SECONDS = 300

log = structlog.get_logger(__name__)
_tracer = trace.get_tracer("greenlight.operator")


class Delivery(enum.StrEnum):
    NOT_DELIVERED = "not-delivered"  # the service did not act on it (or was never reached)
    UNKNOWN = "unknown"  # the request may have reached the service; no answer came back


class ConnectorError(Exception):
    """A Bot Connector call failed after its retries; `code` is short and loggable."""

    def __init__(
        self, operation: str, code: str, *, delivery: Delivery, status: int | None = None
    ) -> None:
        super().__init__(f"teams {operation} failed: {code}")
        self.operation = operation
        self.code = code
        self.delivery = delivery
        self.status = status


class TokenError(Exception):
    """Microsoft Entra ID gave no token (wrong credentials, tenant, or unreachable)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one Bot Connector call tries before its error reaches the caller."""

    max_retries: int = 3
    backoff_factor: float = 0.5  # seconds; doubled per attempt, plus up to 0.5 s of jitter
    max_retry_after: float = 60.0  # a longer Retry-After ends the retries instead
    connect_timeout: float = 5.0
    read_timeout: float = 30.0


class AppTokens:
    """The bot's outbound access tokens (msal client credentials), cached."""

    def __init__(
        self,
        *,
        app_id: str,
        credential: str | Mapping[str, str],
        authority: str,
        scope: str,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 10.0,
        verify: bool | str = True,
    ) -> None:
        """`credential` is the app password, or msal's certificate form
        ({"private_key": PEM, "public_certificate": PEM}); `verify` is requests' (a CA bundle
        path in tests)."""
        self._app_id = app_id
        self._credential = credential
        self._authority = authority
        self._scope = scope
        self._clock = clock
        self._timeout = timeout
        self._verify = verify
        self._app: Any = None
        self._token: tuple[str, float] | None = None  # (access token, monotonic expiry)
        self._lock = asyncio.Lock()
        self.acquired = 0  # tokens fetched from Entra ID (not from the cache)

    async def token(self) -> str:
        cached = self._token
        if cached is not None and self._clock() < cached[1] - TOKEN_EARLY_REFRESH_SECONDS:
            return cached[0]
        async with self._lock:
            cached = self._token
            if cached is not None and self._clock() < cached[1] - TOKEN_EARLY_REFRESH_SECONDS:
                return cached[0]
            started = self._clock()
            with _tracer.start_as_current_span("teams token", kind=trace.SpanKind.CLIENT):
                result = await asyncio.to_thread(self._acquire)
            token = result.get("access_token")
            if not isinstance(token, str) or not token:
                error = str(result.get("error") or "no access_token")[:80]
                raise TokenError(f"Entra ID refused the bot's token request: {error}")
            lifetime = float(result.get("expires_in") or 0)
            self._token = (token, started + lifetime)
            self.acquired += 1
            return token

    def invalidate(self) -> None:
        """Forget the cached token (the Bot Connector refused it)."""
        self._token = None
        if self._app is not None:
            self._app.remove_tokens_for_client()

    def _http(self) -> requests.Session:
        """msal's HTTP client. `verify` is passed on every request: requests lets
        REQUESTS_CA_BUNDLE override a session's own setting, never a request's."""
        session = requests.Session()
        session.request = functools.partial(  # type: ignore[method-assign]
            session.request, timeout=self._timeout, verify=self._verify
        )
        return session

    def _acquire(self) -> Mapping[str, Any]:
        try:
            if self._app is None:
                # msal discovers the tenant's endpoints here (a network call), so the app is
                # built on first use, in this thread, and an outage at start is retried later.
                self._app = msal.ConfidentialClientApplication(
                    self._app_id,
                    client_credential=self._credential,
                    authority=self._authority,
                    instance_discovery=False,
                    http_client=self._http(),
                    token_cache=msal.TokenCache(),
                )
            result: Mapping[str, Any] = self._app.acquire_token_for_client(scopes=[self._scope])
        except Exception as exc:  # discovery failed (ValueError), requests' or msal's own errors
            raise TokenError(
                f"Entra ID could not be asked for a token: {type(exc).__name__}"
            ) from None
        return result


class BotConnector:
    """The Bot Connector calls Greenlight makes (docs/teams.md lists them)."""

    def __init__(
        self,
        tokens: AppTokens,
        service_urls: ServiceUrls,
        retry: RetryPolicy | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context` None verifies servers against the system's trust store."""
        self._tokens = tokens
        self._service_urls = service_urls
        self._retry = retry or RetryPolicy()
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The shared HTTP session (also used to fetch the Bot Framework's signing keys)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
                headers={"User-Agent": "greenlight-teams"},
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, service_url: str, conversation: str, activity: Mapping[str, Any]) -> str:
        """Post `activity` to `conversation`; the new activity's id."""
        url = _url(service_url, "v3", "conversations", conversation, "activities")
        answer = await self._call("sendToConversation", "POST", url, activity, idempotent=False)
        return _activity_id(answer, "sendToConversation")

    async def reply(
        self, service_url: str, conversation: str, activity_id: str, activity: Mapping[str, Any]
    ) -> str:
        """Post `activity` in the thread of `activity_id`; the reply's id."""
        url = _url(service_url, "v3", "conversations", conversation, "activities", activity_id)
        answer = await self._call("replyToActivity", "POST", url, activity, idempotent=False)
        return _activity_id(answer, "replyToActivity")

    async def update(
        self, service_url: str, conversation: str, activity_id: str, activity: Mapping[str, Any]
    ) -> None:
        """Replace the activity `activity_id` (a card) with `activity`."""
        url = _url(service_url, "v3", "conversations", conversation, "activities", activity_id)
        body = {**activity, "id": activity_id}
        await self._call("updateActivity", "PUT", url, body, idempotent=True)

    async def member(self, service_url: str, conversation: str, user_id: str) -> Mapping[str, Any]:
        """The member `user_id` of `conversation` (a team or chat), as Teams describes it."""
        url = _url(service_url, "v3", "conversations", conversation, "members", user_id)
        return await self._call("getConversationMember", "GET", url, None, idempotent=True)

    async def _call(
        self,
        operation: str,
        method: str,
        url: str,
        body: Mapping[str, Any] | None,
        *,
        idempotent: bool,
    ) -> Mapping[str, Any]:
        try:
            self._service_urls.check(url)
        except UntrustedServiceUrl:
            raise ConnectorError(
                operation, "untrusted_service_url", delivery=Delivery.NOT_DELIVERED
            ) from None
        with _tracer.start_as_current_span(f"teams {operation}", kind=trace.SpanKind.CLIENT):
            return await self._attempts(operation, method, url, body, idempotent)

    async def _attempts(
        self,
        operation: str,
        method: str,
        url: str,
        body: Mapping[str, Any] | None,
        idempotent: bool,
    ) -> Mapping[str, Any]:
        policy = self._retry
        refreshed = False
        attempt = 0
        while True:
            wait: float | None = None
            try:
                token = await self._tokens.token()
            except TokenError as exc:
                if attempt >= policy.max_retries:
                    raise ConnectorError(
                        operation, f"no_token ({exc})", delivery=Delivery.NOT_DELIVERED
                    ) from None
                wait, code, status = self._backoff(attempt), "no_token", None
            else:
                try:
                    status, headers, answer = await self._request(method, url, body, token)
                except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                    # Never reached the service: safe to try again, whatever the method.
                    status, headers, answer = None, {}, None
                    code = f"unreachable ({type(exc).__name__})"
                    wait = self._backoff(attempt)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    code = f"no_answer ({type(exc).__name__})"
                    if not idempotent:
                        raise ConnectorError(operation, code, delivery=Delivery.UNKNOWN) from None
                    status, headers, answer = None, {}, None
                    wait = self._backoff(attempt)
                else:
                    if 200 <= status < 300:
                        return answer or {}
                    code = f"http_{status}"
                    if status == 401 and not refreshed:
                        self._tokens.invalidate()
                        refreshed, wait = True, 0.0
                    elif status == 429:
                        wait = _retry_after(headers, policy)
                    elif status >= 500:
                        wait = self._backoff(attempt)
            if wait is None or attempt >= policy.max_retries:
                raise ConnectorError(
                    operation, code, delivery=Delivery.NOT_DELIVERED, status=status
                )
            log.info("teams call retried", operation=operation, code=code, wait=round(wait, 2))
            await asyncio.sleep(wait)
            attempt += 1

    async def _request(
        self, method: str, url: str, body: Mapping[str, Any] | None, token: str
    ) -> tuple[int, Mapping[str, str], Mapping[str, Any] | None]:
        policy = self._retry
        timeout = aiohttp.ClientTimeout(
            total=None, connect=policy.connect_timeout, sock_read=policy.read_timeout
        )
        async with self.session().request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            allow_redirects=False,
            timeout=timeout,
        ) as response:
            try:
                raw = await read_bounded(response.content, MAX_RESPONSE_BYTES)
            except TooLarge:
                raw = b""
            answer = _json_object(raw) if 200 <= response.status < 300 else None
            return response.status, dict(response.headers), answer

    def _backoff(self, attempt: int) -> float:
        return float(self._retry.backoff_factor * (2**attempt) + random.uniform(0, 0.5))  # noqa: S311


def _url(service_url: str, *segments: str) -> str:
    return service_url.rstrip("/") + "/" + "/".join(quote(s, safe="") for s in segments)


def _retry_after(headers: Mapping[str, str], policy: RetryPolicy) -> float | None:
    """Seconds to wait per `Retry-After` (1 when absent); None when it is beyond the cap."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), "")
    seconds = 1.0
    if value.strip():
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                seconds = (when - datetime.now(UTC)).total_seconds()
    seconds = max(seconds, 0.0)
    return seconds if seconds <= policy.max_retry_after else None


def _json_object(raw: bytes) -> Mapping[str, Any] | None:
    if not raw.strip():
        return {}
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def _activity_id(answer: Mapping[str, Any], operation: str) -> str:
    activity_id = answer.get("id")
    if not isinstance(activity_id, str) or not activity_id:
        # The service accepted the post (2xx) but named no activity: it exists, unrecorded.
        raise ConnectorError(operation, "answer_without_id", delivery=Delivery.UNKNOWN)
    return activity_id
