"""The Slack notifier: one interactive message per request, updated when the request ends.

Posting once. Slack has no idempotency key for chat.postMessage, so the message carries its own:
message metadata `greenlight_request` with the request uid. Before posting, `notify` reads the
channel's recent history with `include_all_metadata` and returns the earlier message when this
app already posted one for the uid — the case where the operator crashed after Slack accepted the
message but before `status.notifications` recorded its ts, or where Slack accepted a post whose
response was lost. If that lookup fails, nothing is posted (NotifierError, retried later): a
missing message is repaired by the retry, a duplicate could never be taken back. docs/slack.md
states the exact guarantee and its bound (HISTORY_PAGES x HISTORY_PAGE_SIZE messages). The
lookup is skipped when the caller says the try is `fresh` (the first for a request created
while this replica watched: nothing can have been posted for it).

Resolving. `resolve` rewrites the message (buttons gone; outcome, who, when, via, reason) and
replies in its thread once: the reply carries `greenlight_resolution` metadata and is looked up
in the thread before posting, for the same reason. A message that can no longer be edited
(deleted, channel archived) is logged and left alone: no retry could change that.

Delivery metrics are counted by the caller (adapters/announce.py) for every notifier alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from greenlight.adapters.conflicts import KeyedLocks
from greenlight.adapters.notifiers import FollowUp, NotificationRef, NotifierError
from greenlight.adapters.slack import blocks
from greenlight.adapters.slack.client import API_ERRORS, error_code
from greenlight.adapters.slack.tokens import TokenCodec
from greenlight.core.model import Action, RequestView

REQUEST_EVENT = "greenlight_request"
RESOLUTION_EVENT = "greenlight_resolution"
FOLLOW_UP_EVENT = "greenlight_follow_up"
HISTORY_PAGE_SIZE = 200
HISTORY_PAGES = 5
# The longest timeout a request may have (DESIGN §2): its message cannot be older than this.
MAX_REQUEST_LIFETIME = timedelta(days=7)
# Errors that no retry can fix: the message or channel is gone, or the app may not edit it.
_PERMANENT_ERRORS = frozenset(
    {"message_not_found", "channel_not_found", "cant_update_message", "is_archived"}
)

log = structlog.get_logger(__name__)


class SlackNotifier:
    """Implements greenlight.adapters.notifiers.Notifier for Slack."""

    name = "slack"
    immediate = False

    def __init__(self, client: AsyncWebClient, codec: TokenCodec, default_channel: str) -> None:
        self._client = client
        self._codec = codec
        self._default_channel = default_channel
        self._bot: tuple[str, str] | None = None  # (bot_id, bot user id) from auth.test
        # Serializes notify calls per request uid (lookup-then-post must not interleave).
        self._locks = KeyedLocks()

    def channels(self, request: RequestView) -> tuple[str, ...]:
        own = request.slack_channel or self._default_channel
        return tuple(dict.fromkeys(c for c in (own, *request.policy_channels("slack")) if c))

    async def notify(
        self, request: RequestView, channel: str | None = None, *, fresh: bool = False
    ) -> NotificationRef:
        """Post the request's message once: unless `fresh`, the channel's history is looked up
        first for one this app posted earlier (module docstring)."""
        channel = channel or request.slack_channel or self._default_channel
        if not channel:
            raise NotifierError(
                f"no Slack channel for {request.namespace}/{request.name}: set "
                "spec.notify.slack.channel or GREENLIGHT_SLACK_DEFAULT_CHANNEL"
            )
        async with self._locks.hold(request.uid):
            return await self._notify_once(request, channel, fresh)

    async def resolve(self, request: RequestView, ref: NotificationRef) -> None:
        if not ref.ref:
            return
        message = blocks.resolved_message(request)
        try:
            await self._client.chat_update(
                channel=ref.channel,
                ts=ref.ref,
                text=message.text,
                blocks=message.blocks,
                metadata=_metadata(REQUEST_EVENT, request),
            )
            if not await self._find_resolution_reply(request, ref):
                await self._client.chat_postMessage(
                    channel=ref.channel,
                    thread_ts=ref.ref,
                    text=blocks.outcome_line(request),
                    metadata=_metadata(RESOLUTION_EVENT, request),
                )
        except SlackApiError as exc:
            if error_code(exc) in _PERMANENT_ERRORS:
                log.warning(
                    "slack message can no longer be updated",
                    request=f"{request.namespace}/{request.name}",
                    channel=ref.channel,
                    error=error_code(exc),
                )
                return
            raise _failure("resolve", exc) from exc
        except API_ERRORS as exc:
            raise _failure("resolve", exc) from exc

    async def remind(self, request: RequestView, ref: NotificationRef, note: FollowUp) -> None:
        """A reply in the announcement's thread that mentions the user groups; carries
        `greenlight_follow_up` metadata with the key and is looked up before posting, so a
        restart between posting and recording never posts it twice."""
        if not ref.ref:
            return
        mentions = " ".join(f"<!subteam^{group}>" for group in note.slack_user_groups)
        text = f"{mentions} {note.text}" if mentions else note.text
        metadata = _metadata(FOLLOW_UP_EVENT, request)
        metadata["event_payload"]["key"] = note.key
        try:
            if await self._find_follow_up(request, ref, note.key):
                return
            await self._client.chat_postMessage(
                channel=ref.channel,
                thread_ts=ref.ref,
                text=text,
                metadata=metadata,
                unfurl_links=False,
                unfurl_media=False,
            )
        except API_ERRORS as exc:
            raise _failure("remind", exc) from exc

    async def _find_follow_up(self, request: RequestView, ref: NotificationRef, key: str) -> bool:
        bot = await self._bot_identity()
        response = await self._client.conversations_replies(
            channel=ref.channel, ts=ref.ref, limit=HISTORY_PAGE_SIZE, include_all_metadata=True
        )
        return any(
            _is_ours(message, bot)
            and _carries(message, FOLLOW_UP_EVENT, request.uid)
            and (message["metadata"].get("event_payload") or {}).get("key") == key
            for message in response.get("messages") or []
            if message.get("ts") != ref.ref
        )

    async def _notify_once(
        self, request: RequestView, channel: str, fresh: bool
    ) -> NotificationRef:
        try:
            existing = None if fresh else await self._find_request_message(request, channel)
            if existing is not None:
                log.info(
                    "slack message already posted; reusing it",
                    request=f"{request.namespace}/{request.name}",
                    channel=existing.channel,
                    ts=existing.ref,
                )
                return existing
            message = blocks.pending_message(
                request,
                approve_token=self._codec.mint(request.uid, Action.APPROVE),
                deny_token=self._codec.mint(request.uid, Action.DENY),
            )
            response = await self._client.chat_postMessage(
                channel=channel,
                text=message.text,
                blocks=message.blocks,
                metadata=_metadata(REQUEST_EVENT, request),
                unfurl_links=False,
                unfurl_media=False,
            )
        except API_ERRORS as exc:
            raise _failure("notify", exc) from exc
        return NotificationRef(channel=str(response["channel"]), ref=str(response["ts"]))

    async def _find_request_message(
        self, request: RequestView, channel: str
    ) -> NotificationRef | None:
        """This app's earlier message for the request uid among the channel's recent history."""
        bot = await self._bot_identity()
        oldest = (
            f"{(request.expires_at - MAX_REQUEST_LIFETIME).timestamp():.6f}"
            if request.expires_at is not None
            else None
        )
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            response = await self._client.conversations_history(
                channel=channel,
                limit=HISTORY_PAGE_SIZE,
                oldest=oldest,
                cursor=cursor,
                include_all_metadata=True,
            )
            for message in response.get("messages") or []:
                if _is_ours(message, bot) and _carries(message, REQUEST_EVENT, request.uid):
                    return NotificationRef(channel=channel, ref=str(message["ts"]))
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not response.get("has_more") or cursor is None:
                return None
        return None

    async def _find_resolution_reply(self, request: RequestView, ref: NotificationRef) -> bool:
        bot = await self._bot_identity()
        response = await self._client.conversations_replies(
            channel=ref.channel, ts=ref.ref, limit=HISTORY_PAGE_SIZE, include_all_metadata=True
        )
        return any(
            _is_ours(message, bot) and _carries(message, RESOLUTION_EVENT, request.uid)
            for message in response.get("messages") or []
            if message.get("ts") != ref.ref
        )

    async def _bot_identity(self) -> tuple[str, str]:
        if self._bot is None:
            response = await self._client.auth_test()
            self._bot = (str(response.get("bot_id") or ""), str(response.get("user_id") or ""))
        return self._bot


def _metadata(event_type: str, request: RequestView) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "event_payload": {
            "uid": request.uid,
            "namespace": request.namespace,
            "name": request.name,
            "phase": request.phase.value,
        },
    }


def _is_ours(message: Mapping[str, Any], bot: tuple[str, str]) -> bool:
    bot_id, bot_user = bot
    by_bot = bool(bot_id) and message.get("bot_id") == bot_id
    return by_bot or (bool(bot_user) and message.get("user") == bot_user)


def _carries(message: Mapping[str, Any], event_type: str, uid: str) -> bool:
    metadata = message.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != event_type:
        return False
    payload = metadata.get("event_payload")
    return isinstance(payload, Mapping) and payload.get("uid") == uid


def _failure(operation: str, exc: BaseException) -> NotifierError:
    code = error_code(exc)
    hint = " (the app lacks a scope: see docs/slack.md)" if code == "missing_scope" else ""
    return NotifierError(f"slack {operation} failed: {code}{hint}")
