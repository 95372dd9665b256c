"""Slack: interactive approval messages, and the clicks that come back (docs/slack.md).

The operator calls `start_slack` once; the returned runtime holds the notifier (posts and
resolves messages) and the interaction receiver for the configured mode — an HTTP endpoint
(`http`) or a Socket Mode connection (`socket`) — until `stop()`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import SecretStr
from slack_sdk.web.async_client import AsyncWebClient

from greenlight.adapters.chat import DecisionsPort
from greenlight.adapters.slack.client import RetryPolicy, build_client, open_session
from greenlight.adapters.slack.interactions import (
    INTERACTIONS_PATH,
    InteractionHandler,
    InteractionsEndpoint,
)
from greenlight.adapters.slack.notifier import SlackNotifier
from greenlight.adapters.slack.socket_mode import SocketModeReceiver
from greenlight.adapters.slack.tokens import TokenCodec
from greenlight.adapters.slack.users import EmailStrategy, UserDirectory, load_user_map
from greenlight.config import Settings

__all__ = [
    "DecisionsPort",
    "EmailStrategy",
    "RetryPolicy",
    "SlackConfigError",
    "SlackNotifier",
    "SlackRuntime",
    "start_slack",
]


class SlackConfigError(ValueError):
    """A Slack setting is missing or wrong; the message names the variable to set."""


@dataclass(frozen=True)
class SlackRuntime:
    """The running Slack integration: the notifier, and how to stop receiving clicks."""

    notifier: SlackNotifier
    mode: str
    interactions_url: str  # where the HTTP endpoint listens; "" in Socket Mode
    _stop: Callable[[], Awaitable[None]]

    async def stop(self) -> None:
        await self._stop()


async def start_slack(
    settings: Settings,
    decisions: DecisionsPort,
    *,
    host: str = "0.0.0.0",  # noqa: S104 - the interactions endpoint is reached through a Service
    email_strategy: EmailStrategy = EmailStrategy.EMAIL,
    retry: RetryPolicy | None = None,
) -> SlackRuntime:
    """Build the notifier and start receiving interactions per `settings.slack_mode`."""
    bot_token = _secret(settings.slack_bot_token, "GREENLIGHT_SLACK_BOT_TOKEN")
    signing_secret = _secret(settings.slack_signing_secret, "GREENLIGHT_SLACK_SIGNING_SECRET")
    try:
        user_map = load_user_map(settings.slack_user_map_file)
    except (OSError, ValueError) as exc:
        raise SlackConfigError(f"GREENLIGHT_SLACK_USER_MAP_FILE: {exc}") from exc
    policy = retry or RetryPolicy()
    session = open_session(policy)  # every call's connection, kept alive: one TLS handshake
    try:
        client = build_client(bot_token, settings.slack_api_url, policy, session)
        try:
            users = UserDirectory(
                client,
                user_map,
                email_strategy,
                allowed_domains=settings.slack_allowed_email_domains,
            )
        except ValueError as exc:
            raise SlackConfigError(f"GREENLIGHT_SLACK_ALLOWED_EMAIL_DOMAINS: {exc}") from exc
        codec = TokenCodec(signing_secret)
        notifier = SlackNotifier(client, codec, settings.slack_default_channel)
        handler = InteractionHandler(client, codec, users, decisions)
        stop = await _receive(settings, handler, signing_secret, client, host)
    except BaseException:
        await session.close()
        raise

    async def stopped() -> None:
        try:
            await stop.receiver()
        finally:
            await session.close()

    return SlackRuntime(notifier, settings.slack_mode, stop.url, stopped)


@dataclass(frozen=True)
class _Receiving:
    receiver: Callable[[], Awaitable[None]]  # stops receiving interactions
    url: str  # the HTTP endpoint's address; "" in Socket Mode


async def _receive(
    settings: Settings,
    handler: InteractionHandler,
    signing_secret: str,
    client: AsyncWebClient,
    host: str,
) -> _Receiving:
    """Start receiving interactions per `settings.slack_mode`."""
    if settings.slack_mode == "socket":
        app_token = _secret(settings.slack_app_token, "GREENLIGHT_SLACK_APP_TOKEN")
        receiver = SocketModeReceiver(handler, app_token, client)
        await receiver.start()
        return _Receiving(receiver.stop, "")
    runner = web.AppRunner(InteractionsEndpoint(handler, signing_secret).app())
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, settings.slack_interactions_port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    return _Receiving(runner.cleanup, f"http://{bound_host}:{bound_port}{INTERACTIONS_PATH}")


def _secret(value: SecretStr | None, variable: str) -> str:
    text = value.get_secret_value() if value is not None else ""
    if not text:
        raise SlackConfigError(f"{variable} is required for Slack (key in the Slack Secret)")
    return text
