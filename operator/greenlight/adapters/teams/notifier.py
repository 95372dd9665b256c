"""The Teams notifier: one Adaptive Card per request and conversation, updated when it ends.

Posting once. The card is posted proactively (`POST {serviceUrl}/v3/conversations/{id}/
activities`, the serviceUrl of GREENLIGHT_TEAMS_SERVICE_URL) and recorded in the card journal
(journal.py) before `notify` returns; `notify` consults the journal first, so a restart between
the post and the status write returns the recorded card. When the post's outcome is unknown
(the operator died, or the connection dropped, after sending), no second card is posted: notify
fails with a message that says so (Notified=False), and the first click on the card adopts it.
A post the Bot Connector answered with an error is forgotten and retried.

Resolving. `resolve` rewrites the card (`PUT .../activities/{activityId}`: actions gone;
outcome, who, when, via, reason) — idempotent, so repeated on every retry — and replies once in
the card's thread with the outcome (the reply is journaled like the post). A card that can no
longer be edited (deleted, the bot removed from the team) is logged and left alone.

Delivery metrics are counted by the caller (adapters/announce.py) for every notifier alike.
"""

from __future__ import annotations

import asyncio

import structlog

from greenlight.adapters.conflicts import KeyedLocks
from greenlight.adapters.notifiers import FollowUp, NotificationRef, NotifierError
from greenlight.adapters.teams import cards
from greenlight.adapters.teams.connector import BotConnector, ConnectorError, Delivery
from greenlight.adapters.teams.journal import CardJournal, CardRecord, State
from greenlight.adapters.teams.tokens import CardTokens
from greenlight.core.model import Action, RequestView

# The card or the bot is gone from the conversation: no retry could change that.
_GONE = frozenset({403, 404})

log = structlog.get_logger(__name__)


class TeamsNotifier:
    """Implements greenlight.adapters.notifiers.Notifier for Microsoft Teams."""

    name = "teams"
    immediate = False

    def __init__(
        self,
        connector: BotConnector,
        codec: CardTokens,
        journal: CardJournal,
        *,
        service_url: str,
        default_conversation: str,
    ) -> None:
        self._connector = connector
        self._codec = codec
        self._journal = journal
        self._service_url = service_url
        self._default = default_conversation
        # Serializes notify calls per request uid (look-up-then-post must not interleave).
        self._locks = KeyedLocks()

    def channels(self, request: RequestView) -> tuple[str, ...]:
        own = request.teams_conversation or self._default
        return tuple(dict.fromkeys(c for c in (own, *request.policy_channels("teams")) if c))

    async def notify(
        self, request: RequestView, channel: str | None = None, *, fresh: bool = False
    ) -> NotificationRef:
        conversation = channel or request.teams_conversation or self._default
        if not conversation:
            raise NotifierError(
                f"no Teams conversation for {_ref(request)}: set "
                "spec.notify.teams.conversation or GREENLIGHT_TEAMS_DEFAULT_CONVERSATION"
            )
        async with self._locks.hold(request.uid):
            return await self._notify_once(request, conversation)

    async def resolve(self, request: RequestView, ref: NotificationRef) -> None:
        if not ref.ref:
            return
        activity = cards.message(cards.resolved_card(request), _summary(request))
        try:
            await self._connector.update(self._service_url, ref.channel, ref.ref, activity)
        except ConnectorError as exc:
            if exc.status in _GONE:
                log.warning(
                    "teams card can no longer be updated",
                    request=_ref(request),
                    conversation=ref.channel,
                    error=exc.code,
                )
                return
            raise _failure("resolve", exc) from exc
        await self._reply_once(request, ref)

    async def remind(self, request: RequestView, ref: NotificationRef, note: FollowUp) -> None:
        """A reply in the card's thread that mentions `note.teams_tags`; each key is posted at
        most once per card (journaled like the outcome reply)."""
        if not ref.ref:
            return
        record = await self._record_of(request, ref)
        if any(key == note.key for key, _state in record.follow_ups):
            return
        record = await asyncio.to_thread(self._journal.follow_up, record, note.key, State.POSTING)
        try:
            await self._connector.reply(
                self._service_url, ref.channel, ref.ref, cards.follow_up(note.text, note.teams_tags)
            )
        except ConnectorError as exc:
            if exc.delivery is Delivery.UNKNOWN:
                log.warning("teams follow-up unanswered; not sent again", key=note.key)
                return
            await asyncio.to_thread(self._journal.follow_up, record, note.key, None)
            raise _failure("remind", exc) from exc
        await asyncio.to_thread(self._journal.follow_up, record, note.key, State.POSTED)

    async def _notify_once(self, request: RequestView, conversation: str) -> NotificationRef:
        try:
            record = await asyncio.to_thread(self._journal.lookup, request.uid, conversation)
            if record is not None:
                return self._earlier(request, record)
            if request.phase.terminal:
                raise NotifierError(
                    f"{_ref(request)} is already {request.phase.value} and Greenlight holds no "
                    f"record of a card in {conversation}: no card is posted for a finished request"
                )
            card = cards.pending_card(
                request,
                approve_token=self._codec.mint(request.uid, Action.APPROVE, request.plan_digest),
                deny_token=self._codec.mint(request.uid, Action.DENY, request.plan_digest),
            )
            await asyncio.to_thread(self._journal.begin, request.uid, conversation)
        except (OSError, ValueError) as exc:
            raise NotifierError(f"teams card not posted: {exc}") from exc
        try:
            activity_id = await self._connector.send(
                self._service_url, conversation, cards.message(card, _summary(request))
            )
        except ConnectorError as exc:
            if exc.delivery is Delivery.NOT_DELIVERED:
                await asyncio.to_thread(self._journal.forget, request.uid, conversation)
                raise _failure("notify", exc) from exc
            raise NotifierError(_unknown(request, conversation, exc.code)) from exc
        await asyncio.to_thread(self._journal.posted, request.uid, conversation, activity_id)
        return NotificationRef(channel=conversation, ref=activity_id)

    def _earlier(self, request: RequestView, record: CardRecord) -> NotificationRef:
        if record.state is State.POSTED and record.activity_id:
            log.info(
                "teams card already posted; reusing it",
                request=_ref(request),
                conversation=record.conversation,
                activity_id=record.activity_id,
            )
            return NotificationRef(channel=record.conversation, ref=record.activity_id)
        raise NotifierError(_unknown(request, record.conversation, "no answer recorded"))

    async def _record_of(self, request: RequestView, ref: NotificationRef) -> CardRecord:
        """The journal's record of the card `ref` (status names it: so it was posted)."""
        record = await asyncio.to_thread(self._journal.lookup, request.uid, ref.channel)
        if record is None or record.state is not State.POSTED or record.activity_id != ref.ref:
            record = await asyncio.to_thread(
                self._journal.posted, request.uid, ref.channel, ref.ref
            )
        return record

    async def _reply_once(self, request: RequestView, ref: NotificationRef) -> None:
        record = await self._record_of(request, ref)
        if record.reply:
            return
        record = await asyncio.to_thread(self._journal.reply, record, State.POSTING)
        outcome = cards.text_message(cards.outcome_text(request))
        try:
            await self._connector.reply(self._service_url, ref.channel, ref.ref, outcome)
        except ConnectorError as exc:
            if exc.delivery is Delivery.UNKNOWN:
                log.warning(
                    "teams outcome reply unanswered; not sent again",
                    request=_ref(request),
                    error=exc.code,
                )
                return
            await asyncio.to_thread(self._journal.reply, record, None)
            if exc.status in _GONE:
                return
            raise _failure("resolve", exc) from exc
        await asyncio.to_thread(self._journal.reply, record, State.POSTED)


def _ref(request: RequestView) -> str:
    return f"{request.namespace}/{request.name}"


def _summary(request: RequestView) -> str:
    return f"Greenlight: {_ref(request)} is {request.phase.value}"


def _unknown(request: RequestView, conversation: str, code: str) -> str:
    return (
        f"the card for {_ref(request)} may have been posted to {conversation} without an answer "
        f"({code}); Teams offers no way to look it up, so no second card is posted: the first "
        "click on it records it (docs/teams.md, Posting once), and kubectl decides as always"
    )


def _failure(operation: str, exc: ConnectorError) -> NotifierError:
    hint = ""
    if exc.status in {401, 403}:
        hint = " (check the bot's credentials and that the app is installed in the team)"
    return NotifierError(f"teams {operation} failed: {exc.code}{hint}")
