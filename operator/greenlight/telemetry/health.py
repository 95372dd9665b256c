"""Health of the external services the automation depends on, as Prometheus metrics.

Each check is an HTTP GET on a status endpoint, repeated on its own interval. A check is *up*
when the response status is one of `expected_status`; any other status, a timeout or a
connection error is *down*. Results land in `greenlight_external_service_up{service}` (1/0)
and, when a response arrived, `greenlight_external_service_request_duration_seconds{service}`.

Checks come from the YAML list in `GREENLIGHT_HEALTH_CHECKS_FILE` (which replaces the defaults;
an empty list disables checking) or from `default_checks()`: GitHub, Pulumi Cloud, Slack, the
Bot Connector and its sign-in services when Teams is configured, and HashiCorp Vault when
`VAULT_ADDR` is set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
)

from greenlight.config import Settings
from greenlight.telemetry.metrics import EXTERNAL_SERVICE_DURATION, EXTERNAL_SERVICE_UP

_log = logging.getLogger(__name__)

CHECKS_FILE_ENV = "GREENLIGHT_HEALTH_CHECKS_FILE"
# Vault's /v1/sys/health: 200 active, 429 standby, 473 performance standby are serving;
# 501 (not initialised), 503 (sealed) and 472 (DR secondary) are not.
VAULT_UP_STATUSES = (200, 429, 473)


class HealthCheck(BaseModel):
    """One external service to probe; `name` becomes the `service` label (keep it short)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    url: str = Field(pattern=r"^https?://\S+$")
    expected_status: tuple[int, ...] = (200,)
    interval_seconds: float = Field(
        30.0, gt=0, validation_alias=AliasChoices("interval_seconds", "interval")
    )
    timeout_seconds: float = Field(
        5.0, gt=0, validation_alias=AliasChoices("timeout_seconds", "timeout")
    )

    @field_validator("expected_status", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, int) else value

    @field_validator("expected_status")
    @classmethod
    def _http_statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 100 <= status <= 599 for status in value):
            raise ValueError("expected_status must be one or more HTTP statuses (100..599)")
        return value


_CHECK_LIST = TypeAdapter(list[HealthCheck])


def default_checks(settings: Settings) -> list[HealthCheck]:
    """GitHub, Pulumi Cloud and Slack; the Teams services when Teams is configured
    (`teams_checks`); Vault too when `VAULT_ADDR` is set.

    The Slack check follows `GREENLIGHT_SLACK_API_URL`, so it probes the Slack the operator
    actually talks to.
    """
    slack_api = settings.slack_api_url
    checks = [
        HealthCheck(name="github", url="https://www.githubstatus.com/api/v2/status.json"),
        HealthCheck(name="pulumi", url="https://api.pulumi.com/api/capabilities"),
        HealthCheck(name="slack", url=slack_api.rstrip("/") + "/api.test"),
    ]
    if settings.teams_enabled:
        checks += teams_checks(settings)
    vault_addr = settings.vault_addr
    if vault_addr:
        checks.append(
            HealthCheck(
                name="vault",
                url=vault_addr.rstrip("/") + "/v1/sys/health",
                expected_status=VAULT_UP_STATUSES,
            )
        )
    return checks


def teams_checks(settings: Settings) -> list[HealthCheck]:
    """The services a Teams bot depends on, at the URLs the operator is configured with:
    the Bot Connector (`teams`: an anonymous call is answered 401 when it is up), the Bot
    Framework's OpenID metadata that inbound tokens are verified with (`teams-keys`), and the
    tenant's Entra ID discovery that outbound tokens come from (`teams-login`)."""
    authority = f"{settings.teams_authority_url.rstrip('/')}/{settings.teams_tenant_id.strip()}"
    return [
        HealthCheck(
            name="teams",
            url=settings.teams_service_url.rstrip("/") + "/v3/conversations",
            expected_status=(401,),
        ),
        HealthCheck(name="teams-keys", url=settings.teams_openid_metadata_url),
        HealthCheck(name="teams-login", url=f"{authority}/v2.0/.well-known/openid-configuration"),
    ]


def load_checks(settings: Settings) -> list[HealthCheck]:
    """The checks from `GREENLIGHT_HEALTH_CHECKS_FILE` when set, else `default_checks()`.

    Raises ValueError naming the file and the bad entry when the file is invalid.
    """
    path = settings.health_checks_file
    if path is None:
        return default_checks(settings)
    try:
        checks = _CHECK_LIST.validate_python(yaml.safe_load(Path(path).read_text()) or [])
    except (OSError, yaml.YAMLError, ValueError) as error:
        raise ValueError(f"{CHECKS_FILE_ENV}={path}: {error}") from error
    names = [check.name for check in checks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{CHECKS_FILE_ENV}={path}: duplicate check names {duplicates}")
    return checks


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe; `status` is None when no HTTP response arrived."""

    service: str
    up: bool
    status: int | None
    seconds: float
    error: str = ""


async def probe(session: aiohttp.ClientSession, check: HealthCheck) -> ProbeResult:
    """Probe `check` once and record the result in the metrics."""
    started = time.monotonic()
    try:
        async with session.get(
            check.url, timeout=aiohttp.ClientTimeout(total=check.timeout_seconds)
        ) as response:
            status = response.status
        seconds = time.monotonic() - started
        EXTERNAL_SERVICE_DURATION.labels(service=check.name).observe(seconds)
        up = status in check.expected_status
        result = ProbeResult(check.name, up, status, seconds, "" if up else f"HTTP {status}")
    except (TimeoutError, aiohttp.ClientError) as error:
        reason = "timed out" if isinstance(error, TimeoutError) else type(error).__name__
        result = ProbeResult(check.name, False, None, time.monotonic() - started, reason)
    EXTERNAL_SERVICE_UP.labels(service=check.name).set(1 if result.up else 0)
    return result


async def _watch(session: aiohttp.ClientSession, check: HealthCheck) -> None:
    was_up: bool | None = None
    while True:
        result = await probe(session, check)
        if result.up != was_up:
            _log.log(
                logging.INFO if result.up else logging.WARNING,
                "external service %s is %s",
                check.name,
                "up" if result.up else "down",
                extra={"service": check.name, "url": check.url, "probe_error": result.error},
            )
            was_up = result.up
        await asyncio.sleep(check.interval_seconds)


async def monitor(checks: Sequence[HealthCheck]) -> None:
    """Probe every check on its interval until cancelled (run it as a background task).

    Every service's series exist from the start: `up` at 0 until its first probe answers.
    """
    for check in checks:
        EXTERNAL_SERVICE_UP.labels(service=check.name).set(0)
        EXTERNAL_SERVICE_DURATION.labels(service=check.name)
    if not checks:
        return
    async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as group:
        for check in checks:
            group.create_task(_watch(session, check), name=f"health-{check.name}")
