"""The bot's messaging endpoint: POST /api/messages, where the Bot Connector delivers activities.

Order matters, and every step fails closed:

1. the bearer token is verified (auth.py) from the headers alone — before a byte of the body is
   read, so what an unauthenticated caller sends costs a header parse and at most one
   rate-limited key refetch; refused: 401, counted and audited (bounded, adapters/refusals.py);
2. the body is read up to MAX_BODY_BYTES (413 beyond) and parsed into the fields used here;
3. the activity must be the token's: `channelId` msteams, `serviceUrl` equal to the token's
   `serviceurl` (401 otherwise);
4. its id must be new: ids are remembered until the token that carried them has expired, in a
   bounded table; a replay is refused (401), and when the table is full of live ids new
   activities are turned away (503) rather than remembered less;
5. its tenant (`conversation.tenantId`, `channelData.tenant.id`, which must agree) must be an
   allowed one (GREENLIGHT_TEAMS_ALLOWED_TENANTS); another tenant's user is answered "refused".

Then an `invoke` named `adaptiveCard/action` (a Universal Action) is handled by actions.py and
answered with an AdaptiveCardInvokeResponse: the updated card, or a message only the clicker
sees. A `message` activity whose `value` is Greenlight card data is the Action.Submit fallback
of older clients: it is acknowledged at once and answered by a reply in the card's thread.
A `conversationUpdate` (the app was added to a team) is logged with the ids an administrator
needs for GREENLIGHT_TEAMS_DEFAULT_CONVERSATION. Anything else is acknowledged and ignored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from greenlight.adapters.bodies import TooLarge, read_bounded
from greenlight.adapters.teams import cards
from greenlight.adapters.teams.actions import Answer, CardActions, CardClick
from greenlight.adapters.teams.auth import (
    CLOCK_SKEW_SECONDS,
    AuthError,
    BotFrameworkVerifier,
    Caller,
    KeysUnavailable,
)
from greenlight.adapters.teams.connector import BotConnector, ConnectorError
from greenlight.adapters.teams.users import Clicker

MESSAGES_PATH = "/api/messages"
MAX_BODY_BYTES = 256 * 1024
INVOKE_ACTION = "adaptiveCard/action"
# The Bot Connector waits a few seconds for an invoke's answer; a decision that takes longer
# is finished in the background and shows on the card when the request is decided.
INVOKE_BUDGET_SECONDS = 4.0
REPLAY_CAPACITY = 10_000

log = structlog.get_logger(__name__)


class ActivityIds:
    """Activity ids already accepted, each kept until its token expired (bounded)."""

    def __init__(
        self, capacity: int = REPLAY_CAPACITY, clock: Callable[[], float] = time.time
    ) -> None:
        self._capacity = capacity
        self._clock = clock
        self._seen: dict[str, float] = {}

    def first_time(self, key: str, until: float) -> bool | None:
        """True the first time `key` is offered; False for a replay; None when the table is
        full of ids that may still be replayed (the caller turns the activity away)."""
        now = self._clock()
        seen_until = self._seen.get(key)
        if seen_until is not None and seen_until > now:
            return False
        if len(self._seen) >= self._capacity:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
            if len(self._seen) >= self._capacity:
                return None
        self._seen[key] = until + CLOCK_SKEW_SECONDS
        return True


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Account(_Shape):
    id: str = Field("", max_length=512)
    aad_object_id: str = Field("", alias="aadObjectId", max_length=128)


class _Conversation(_Shape):
    id: str = Field("", max_length=512)
    tenant_id: str = Field("", alias="tenantId", max_length=128)


class _IdOnly(_Shape):
    id: str = Field("", max_length=512)
    name: str = Field("", max_length=512)


class _ChannelData(_Shape):
    tenant: _IdOnly | None = None
    team: _IdOnly | None = None
    channel: _IdOnly | None = None


class _Activity(_Shape):
    """The parts of an activity this module reads, with the types it reads them as."""

    type: str = Field(max_length=64)
    id: str = Field("", max_length=512)
    name: str = Field("", max_length=128)
    channel_id: str = Field("", alias="channelId", max_length=64)
    service_url: str = Field("", alias="serviceUrl", max_length=2048)
    reply_to_id: str = Field("", alias="replyToId", max_length=512)
    sender: _Account = Field(default_factory=_Account, alias="from")
    conversation: _Conversation = Field(default_factory=_Conversation)
    channel_data: _ChannelData = Field(default_factory=_ChannelData, alias="channelData")
    value: Any = None

    def tenant(self) -> str | None:
        """The tenant the activity names; None when its two fields disagree."""
        named = {
            t.strip().lower()
            for t in (
                self.conversation.tenant_id,
                self.channel_data.tenant.id if self.channel_data.tenant else "",
            )
            if t
        }
        if len(named) > 1:
            return None
        return next(iter(named), "")


class TeamsEndpoint:
    """The aiohttp application behind the bot's messaging endpoint."""

    def __init__(
        self,
        verifier: BotFrameworkVerifier,
        actions: CardActions,
        connector: BotConnector,
        allowed_tenants: Collection[str],
        *,
        clock: Callable[[], float] = time.time,
        invoke_budget: float = INVOKE_BUDGET_SECONDS,
    ) -> None:
        self._verifier = verifier
        self._actions = actions
        self._connector = connector
        self._tenants = frozenset(t.strip().lower() for t in allowed_tenants if t.strip())
        self._ids = ActivityIds(clock=clock)
        self._budget = invoke_budget
        self._tasks: set[asyncio.Task[Any]] = set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(MESSAGES_PATH, self._receive)
        app.on_shutdown.append(self._drain)
        return app

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        try:
            caller = await self._verifier.verify(request.headers.get("Authorization", ""))
        except AuthError as exc:
            return self._unverified(exc, "token")
        except KeysUnavailable:
            log.warning("teams activity not verified: Bot Framework signing keys unavailable")
            return web.Response(status=503, text="signing keys unavailable; try again")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return web.Response(status=413, text="activity too large")
        try:
            body = await read_bounded(request.content, MAX_BODY_BYTES)
        except TooLarge:
            return web.Response(status=413, text="activity too large")
        try:
            activity = _Activity.model_validate(json.loads(body))
        except (ValueError, ValidationError):
            return web.Response(status=400, text="expected a Bot Framework activity (JSON)")
        try:
            self._verifier.check_activity(
                caller, service_url=activity.service_url, channel_id=activity.channel_id
            )
        except AuthError as exc:
            return self._unverified(exc, "activity")
        if not activity.id:
            return web.Response(status=400, text="the activity has no id")
        return await self._dispatch(activity, caller)

    def _replayed(self, activity: _Activity, caller: Caller) -> web.StreamResponse | None:
        """The answer to an activity seen before (or one that cannot be remembered), else None.
        Only what is acted on is remembered: a click of the allowed tenants, after its checks
        (other activities, anyone's chat messages included, must not fill the table)."""
        key = f"{activity.conversation.id}\n{activity.id}"
        fresh = self._ids.first_time(key, caller.expires_at)
        if fresh is None:
            log.error("teams activity turned away: too many recent activity ids to remember")
            return web.Response(status=503, text="busy; try again")
        if not fresh:
            return self._unverified(AuthError("replayed", "activity id seen before"), "activity")
        return None

    async def _dispatch(self, activity: _Activity, caller: Caller) -> web.StreamResponse:
        kind = activity.type
        ours = kind == "message" and _card_data(activity.value) is not None
        if kind == "invoke" or ours:
            refusal = self._tenant_refusal(activity)
            if refusal is not None:
                self._spawn(refusal)
                text = "Refused: only people of the organization Greenlight serves may decide."
                if kind == "invoke":
                    return web.json_response(cards.invoke_message(text))
                return web.Response(status=200)
        if kind == "invoke" and activity.name != INVOKE_ACTION:
            return web.Response(status=501)
        if kind == "invoke" or ours:
            replayed = self._replayed(activity, caller)
            if replayed is not None:
                return replayed
        if kind == "invoke":
            answer = await self._answer_in_time(
                _click(activity, "invoke", _invoke_data(activity.value))
            )
            response = cards.invoke_card(answer.card) if answer.card else None
            return web.json_response(response or cards.invoke_message(answer.text))
        if ours:
            click = _click(activity, "message", _card_data(activity.value) or {})
            self._spawn(self._fallback(click, activity))
            return web.Response(status=200)
        if kind == "conversationUpdate":
            _log_conversation(activity)
        return web.Response(status=200)

    def _tenant_refusal(self, activity: _Activity) -> Awaitable[None] | None:
        tenant = activity.tenant()
        if tenant and tenant in self._tenants:
            return None
        return self._actions.refuse_sender(
            "foreign_tenant",
            "the activity's tenant is not an allowed one"
            if tenant is not None
            else "the activity names two different tenants",
            activity.sender.aad_object_id,
            {"transport": activity.type, "tenant": (tenant or "")[:64]},
        )

    async def _answer_in_time(self, click: CardClick) -> Answer:
        task = asyncio.ensure_future(self._actions.act(click))
        self._track(task)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._budget)
        except TimeoutError:
            return Answer(
                "Greenlight is still recording your decision; the card changes once the "
                "request is decided."
            )

    async def _fallback(self, click: CardClick, activity: _Activity) -> None:
        """The Action.Submit path: answered in the card's thread (Teams has no private reply)."""
        answer = await self._actions.act(click)
        try:
            await self._connector.reply(
                activity.service_url,
                activity.conversation.id,
                activity.reply_to_id or activity.id,
                cards.text_message(answer.text),
            )
        except ConnectorError as exc:
            log.warning("teams fallback reply failed", error=exc.code)

    def _unverified(self, exc: AuthError, stage: str) -> web.Response:
        self._spawn(self._actions.refuse_unverified(exc.reason, exc.detail, stage))
        return web.Response(status=401, text=f"refused: {exc.reason}")

    def _spawn(self, work: Awaitable[None]) -> None:
        self._track(asyncio.ensure_future(work))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("teams activity handling failed", error=repr(task.exception()))

    async def _drain(self, _app: web.Application) -> None:
        """Let in-flight decisions finish (bounded) before the server goes away."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)


def _invoke_data(value: Any) -> dict[str, Any]:
    """`value.action` of an adaptiveCard/action invoke: its verb and data (inputs merged)."""
    action = value.get("action") if isinstance(value, dict) else None
    if not isinstance(action, dict) or action.get("type") != "Action.Execute":
        return {}
    data = action.get("data")
    data = data if isinstance(data, dict) else {}
    return {**data, "verb": action.get("verb")}


def _card_data(value: Any) -> dict[str, Any] | None:
    """The Action.Submit data of a Greenlight card, or None for any other message."""
    if isinstance(value, dict) and value.get(cards.DATA_MARK) == cards.DATA_VERSION:
        return value
    return None


def _click(activity: _Activity, transport: str, data: dict[str, Any]) -> CardClick:
    """The click the activity describes; fields that are not strings read as "" (and are
    refused as not Greenlight's by actions.py)."""
    verb, token, reason = (
        value if isinstance(value := data.get(key), str) else ""
        for key in ("verb", "token", cards.REASON_INPUT_ID)
    )
    conversation = activity.conversation.id
    team = activity.channel_data.team.id if activity.channel_data.team else ""
    return CardClick(
        verb=verb,
        token=token,
        reason=reason.strip(),
        clicker=Clicker(
            aad_object_id=activity.sender.aad_object_id,
            user_id=activity.sender.id,
            conversation=conversation,
            team=team,
            service_url=activity.service_url,
        ),
        conversation=conversation.split(";messageid=", 1)[0],
        card_id=activity.reply_to_id,
        transport=transport,
    )


def _log_conversation(activity: _Activity) -> None:
    data = activity.channel_data
    log.info(
        "teams conversation update",
        conversation=activity.conversation.id[:200],
        team=(data.team.id if data.team else "")[:200],
        team_name=(data.team.name if data.team else "")[:100],
        channel=(data.channel.id if data.channel else "")[:200],
        tenant=(activity.tenant() or "")[:64],
    )
