"""Socket Mode: receive interactions over a WebSocket the operator opens (no public ingress).

slack_sdk's aiohttp SocketModeClient asks `apps.connections.open` (with the app-level token,
against the configured API base URL) for a WebSocket URL, keeps the connection alive and
reconnects. Each envelope is acknowledged first — Slack expects the ack within 3 seconds and
redelivers otherwise — and then handed to the same InteractionHandler the HTTP endpoint uses.
The WebSocket is authenticated by the app-level token, so there is no request signature here;
redelivered envelopes (same envelope_id) are handled once.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from greenlight.adapters.slack.interactions import InteractionHandler, ReplayCache

log = structlog.get_logger(__name__)


class SocketModeReceiver:
    """Owns the SocketModeClient and dispatches `interactive` envelopes to the handler."""

    def __init__(
        self,
        handler: InteractionHandler,
        app_token: str,
        web_client: AsyncWebClient,
        ping_interval: float = 5.0,
    ) -> None:
        self._handler = handler
        self._client = SocketModeClient(
            app_token=app_token, web_client=web_client, ping_interval=ping_interval
        )
        self._client.socket_mode_request_listeners.append(self._on_request)
        self._envelopes = ReplayCache()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._client.connect()  # type: ignore[no-untyped-call]

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        await self._client.close()  # type: ignore[no-untyped-call]

    async def _on_request(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        if req.type != "interactive":
            return
        if not self._envelopes.first_time(req.envelope_id, time.time()):
            log.info("slack envelope redelivered; already handled", envelope_id=req.envelope_id)
            return
        task = asyncio.ensure_future(self._handler.handle(req.payload, "socket"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
