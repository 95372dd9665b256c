"""The Slack Web API client every Greenlight Slack component shares, with bounded retries.

Retries use slack_sdk's own handlers so the behaviour is the SDK's documented one:
429 responses wait for `Retry-After` (AsyncRateLimitErrorRetryHandler), 5xx responses and
connection errors/timeouts back off exponentially with jitter. The retry count is shared by all
handlers of one call, so a call makes at most `1 + max_retries` attempts whatever goes wrong;
after that the error reaches the caller.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
from opentelemetry import trace
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

DEFAULT_API_URL = "https://slack.com/api/"

_tracer = trace.get_tracer("greenlight.operator")

# What a Web API call raises once its retries are spent: Slack said no, or was unreachable/slow.
API_ERRORS: tuple[type[Exception], ...] = (
    SlackApiError,
    aiohttp.ClientError,
    TimeoutError,
    OSError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one Web API call tries before its error reaches the caller."""

    max_retries: int = 3
    backoff_factor: float = 0.5  # seconds; doubled per attempt, plus up to 1 s of jitter
    timeout_seconds: int = 10  # per attempt


class _AnyServerErrorRetryHandler(AsyncServerErrorRetryHandler):
    """The SDK handler retries 500 and 503 only; a 502 or 504 from Slack's edge is as transient."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and 500 <= response.status_code <= 599


class _TracedWebClient(AsyncWebClient):
    """Every Web API call, retries included, is one `slack <method>` client span
    (docs/telemetry.md), a child of whatever span the caller is in (notify, resolve, a click)."""

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        with _tracer.start_as_current_span(f"slack {api_method}", kind=trace.SpanKind.CLIENT):
            response: AsyncSlackResponse = await super().api_call(api_method, **kwargs)
            return response


def open_session(policy: RetryPolicy) -> aiohttp.ClientSession:
    """The HTTP session a client's calls share (call from the event loop; close it at stop).
    Its pooled, kept-alive connections spare every call a TCP and TLS handshake; its timeout
    is the policy's, per attempt."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=policy.timeout_seconds))


def build_client(
    token: str,
    api_url: str,
    policy: RetryPolicy,
    session: aiohttp.ClientSession | None = None,
) -> AsyncWebClient:
    """An AsyncWebClient aimed at `api_url` (the fake server in tests) with `policy` applied.
    With `session` (`open_session`) every call goes over its connections; without one,
    slack_sdk opens a session, and a connection, for each call."""
    backoff = BackoffRetryIntervalCalculator(backoff_factor=policy.backoff_factor)
    return _TracedWebClient(
        token=token,
        base_url=api_url,
        session=session,
        timeout=policy.timeout_seconds,
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=policy.max_retries),
            _AnyServerErrorRetryHandler(
                max_retry_count=policy.max_retries, interval_calculator=backoff
            ),
            AsyncConnectionErrorRetryHandler(
                max_retry_count=policy.max_retries,
                interval_calculator=backoff,
                error_types=[
                    aiohttp.ServerConnectionError,
                    aiohttp.ClientOSError,
                    asyncio.TimeoutError,
                ],
            ),
        ],
    )


def error_code(exc: BaseException) -> str:
    """Slack's `error` field (e.g. `ratelimited`, `missing_scope`), else the exception type."""
    if isinstance(exc, SlackApiError) and exc.response is not None:
        data: Any = exc.response.data
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return str(data["error"])
        return f"http_{exc.response.status_code}"
    return type(exc).__name__
