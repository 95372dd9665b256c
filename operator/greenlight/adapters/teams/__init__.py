"""Microsoft Teams: Adaptive Card approvals, and the clicks that come back (docs/teams.md).

The operator calls `start_teams` once; the returned runtime holds the notifier (posts and
resolves cards) and serves the bot's messaging endpoint (POST /api/messages) until `stop()`.

    auth.py        inbound Bot Framework token verification (PyJWT, cached JWKS)
    invoke.py      the messaging endpoint: verification order, replays, tenants, dispatch
    actions.py     a click → card token, user, submit_decision → the answer
    users.py       aadObjectId → Kubernetes identity (mapping file, then the member record)
    connector.py   outbound Bot Connector calls with the bot's msal token, retries
    serviceurls.py where that token may be sent
    cards.py       the Adaptive Cards (schema 1.5)
    tokens.py      card action tokens, bound to the request uid and planDigest
    journal.py     what was posted, so that a restart posts no second card
    notifier.py    the Notifier the announcer drives
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from greenlight.adapters.chat import DecisionsPort
from greenlight.adapters.teams.actions import CardActions
from greenlight.adapters.teams.auth import BotFrameworkVerifier, SigningKeys, http_fetch
from greenlight.adapters.teams.connector import AppTokens, BotConnector, RetryPolicy
from greenlight.adapters.teams.invoke import INVOKE_BUDGET_SECONDS, MESSAGES_PATH, TeamsEndpoint
from greenlight.adapters.teams.journal import CardJournal
from greenlight.adapters.teams.notifier import TeamsNotifier
from greenlight.adapters.teams.serviceurls import ServiceUrls
from greenlight.adapters.teams.tokens import CardTokens
from greenlight.adapters.teams.users import TeamsDirectory, UserMapping, load_user_map
from greenlight.config import Settings

__all__ = [
    "RetryPolicy",
    "TeamsConfigError",
    "TeamsNotifier",
    "TeamsRuntime",
    "start_teams",
]


class TeamsConfigError(ValueError):
    """A Teams setting is missing or wrong; the message names the variable to set."""


@dataclass(frozen=True)
class TeamsRuntime:
    """The running Teams integration: the notifier, and how to stop receiving activities."""

    notifier: TeamsNotifier
    messages_url: str  # where the messaging endpoint listens
    _stop: Callable[[], Awaitable[None]]

    async def stop(self) -> None:
        await self._stop()


async def start_teams(
    settings: Settings,
    decisions: DecisionsPort,
    *,
    card_key: bytes,
    retry: RetryPolicy | None = None,
    min_key_refetch_seconds: float = 60.0,
    invoke_budget: float = INVOKE_BUDGET_SECONDS,
    trust: Path | None = None,
) -> TeamsRuntime:
    """Build the notifier and serve the messaging endpoint on teams_host:teams_port.

    `card_key` keys the card tokens (every replica must pass the same: the operator's record
    key). `trust` is a CA bundle to verify the Microsoft endpoints with instead of the system's
    trust store (the tests' fake). Raises TeamsConfigError naming the setting that is wrong."""
    app_id = _required(settings.teams_app_id, "GREENLIGHT_TEAMS_APP_ID")
    tenant = _required(settings.teams_tenant_id, "GREENLIGHT_TEAMS_TENANT_ID")
    try:
        service_urls = ServiceUrls(settings.teams_service_urls)
    except ValueError as exc:
        raise TeamsConfigError(f"GREENLIGHT_TEAMS_SERVICE_URLS: {exc}") from exc
    if not service_urls.allows(settings.teams_service_url):
        raise TeamsConfigError(
            f"GREENLIGHT_TEAMS_SERVICE_URL {settings.teams_service_url!r} is not under "
            "GREENLIGHT_TEAMS_SERVICE_URLS: the bot's token is only ever sent there"
        )
    try:
        user_map = load_user_map(settings.teams_user_map_file)
    except (OSError, ValueError) as exc:
        raise TeamsConfigError(f"GREENLIGHT_TEAMS_USER_MAP_FILE: {exc}") from exc
    tokens = AppTokens(
        app_id=app_id,
        credential=_credential(settings),
        authority=f"{settings.teams_authority_url.rstrip('/')}/{tenant}",
        scope=settings.teams_token_scope,
        verify=str(trust) if trust is not None else True,
    )
    context = ssl.create_default_context(cafile=str(trust)) if trust is not None else None
    connector = BotConnector(tokens, service_urls, retry, ssl_context=context)
    try:
        keys = SigningKeys(
            settings.teams_openid_metadata_url,
            http_fetch(connector.session),
            min_refetch_seconds=min_key_refetch_seconds,
        )
    except ValueError as exc:
        raise TeamsConfigError(f"GREENLIGHT_TEAMS_OPENID_METADATA_URL: {exc}") from exc
    verifier = BotFrameworkVerifier(
        app_id=app_id, issuer=settings.teams_token_issuer, keys=keys, service_urls=service_urls
    )
    journal = CardJournal(settings.audit_file.parent / "teams-cards")
    try:
        journal.open()
    except OSError as exc:
        raise TeamsConfigError(
            f"GREENLIGHT_AUDIT_FILE: cannot keep Teams card records: {exc}"
        ) from exc
    codec = CardTokens(card_key)
    notifier = TeamsNotifier(
        connector,
        codec,
        journal,
        service_url=settings.teams_service_url,
        default_conversation=settings.teams_default_conversation,
    )
    users = TeamsDirectory(connector, user_map, UserMapping(settings.teams_user_mapping), tenant)
    actions = CardActions(codec, users, decisions, journal)
    endpoint = TeamsEndpoint(
        verifier,
        actions,
        connector,
        settings.teams_allowed_tenants or (tenant,),
        invoke_budget=invoke_budget,
    )
    runner = web.AppRunner(endpoint.app())
    await runner.setup()
    site = web.TCPSite(runner, settings.teams_host, settings.teams_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await connector.close()
        raise TeamsConfigError(
            f"GREENLIGHT_TEAMS_PORT: cannot listen on {settings.teams_host}:"
            f"{settings.teams_port} ({exc})"
        ) from exc
    bound_host, bound_port = runner.addresses[0][:2]

    async def stop() -> None:
        await runner.cleanup()
        await connector.close()

    return TeamsRuntime(notifier, f"http://{bound_host}:{bound_port}{MESSAGES_PATH}", stop)


def _required(value: str, variable: str) -> str:
    if not value.strip():
        raise TeamsConfigError(f"{variable} is required for Teams (key in the Teams Secret)")
    return value.strip()


def _credential(settings: Settings) -> str | dict[str, str]:
    """The app password, or the certificate (PEM with key and certificate) in msal's form."""
    password = settings.teams_app_password
    certificate = settings.teams_certificate_file
    if password is not None and password.get_secret_value() and certificate is not None:
        raise TeamsConfigError(
            "set one of GREENLIGHT_TEAMS_APP_PASSWORD and GREENLIGHT_TEAMS_CERTIFICATE_FILE"
        )
    if certificate is not None:
        return _certificate(Path(certificate))
    if password is None or not password.get_secret_value():
        raise TeamsConfigError(
            "GREENLIGHT_TEAMS_APP_PASSWORD or GREENLIGHT_TEAMS_CERTIFICATE_FILE is required for "
            "Teams (key app-password or certificate.pem in the Teams Secret)"
        )
    return password.get_secret_value()


def _certificate(path: Path) -> dict[str, str]:
    variable = "GREENLIGHT_TEAMS_CERTIFICATE_FILE"
    try:
        pem = path.read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        cert = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError, TypeError) as exc:
        raise TeamsConfigError(
            f"{variable}: {path} must hold an unencrypted PEM private key and its certificate "
            f"({type(exc).__name__})"
        ) from exc
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    # msal derives the SHA-256 thumbprint (x5t#S256, PS256) and sends the chain (x5c).
    return {
        "private_key": key_pem,
        "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
    }
