"""Card actions: one authenticated click on a Greenlight card, turned into a decision attempt.

invoke.py has already verified who sent the activity (the Bot Framework, for this bot, for
Teams, from an allowed tenant, not a replay). Here every click then

1. verifies the card token (tokens.py) — a tampered or foreign value, a token for another
   action, or one minted for another plan (`planDigest`) is refused as `invalid_token`;
2. adopts the card when its post never got an answer (journal.py): the click names it;
3. maps the Teams user to a Kubernetes identity (users.py) — unknown users, guests and
   members of other tenants are refused;
4. calls `submit_decision`, which authorizes exactly like the kubectl path (SubjectAccessReview,
   policy.approvers, self-approval ban, a reason for deny, expiry and terminal requests) and
   audits the attempt; Via.TEAMS;
5. answers the person: the updated card once the request is decided, else a message only the
   person who clicked sees.

Refusals decided here (before `submit_decision`) are counted and audited here; every attempt
that reaches `submit_decision` is audited there, so each attempt is recorded once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from greenlight.adapters.chat import DecisionsPort, already
from greenlight.adapters.decisions import DecisionRefused
from greenlight.adapters.teams import cards
from greenlight.adapters.teams.journal import CardJournal
from greenlight.adapters.teams.tokens import CardGrant, CardTokens, InvalidToken
from greenlight.adapters.teams.users import Clicker, TeamsDirectory, UnknownUser, UserLookupError
from greenlight.core.model import Action, Identity, RequestView, Via
from greenlight.telemetry import metrics

log = structlog.get_logger(__name__)

_VERBS = {cards.APPROVE_VERB: Action.APPROVE, cards.DENY_VERB: Action.DENY}


@dataclass(frozen=True)
class CardClick:
    """One click as the (verified) activity describes it, before the token is trusted."""

    verb: str
    token: str
    reason: str
    clicker: Clicker
    conversation: str  # the conversation the card was posted to (no ;messageid= suffix)
    card_id: str  # the card's activity id (the activity's replyToId)
    transport: str  # "invoke" (Action.Execute) | "message" (the Action.Submit fallback)


@dataclass(frozen=True)
class Answer:
    """What the person who clicked is shown: a message, or the card that replaces theirs."""

    text: str
    card: dict[str, Any] | None = None


class _Refused(Exception):
    def __init__(self, reason: str, message: str, request: RequestView | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.request = request


class CardActions:
    def __init__(
        self,
        codec: CardTokens,
        users: TeamsDirectory,
        decisions: DecisionsPort,
        journal: CardJournal,
    ) -> None:
        self._codec = codec
        self._users = users
        self._decisions = decisions
        self._journal = journal

    async def act(self, click: CardClick) -> Answer:
        """Handle one click; never raises for a refusal."""
        action = _VERBS.get(click.verb)
        try:
            if action is None or not click.token:
                raise _Refused("invalid_token", "This action was not issued by Greenlight.")
            grant, request = await self._card(click, action)
            identity = await self._who(click, request)
            # A card whose post got no answer takes its id from a click of a known member only
            # (a guest's or a stranger's click could name another message).
            await asyncio.to_thread(
                self._journal.adopt, grant.uid, click.conversation, click.card_id
            )
            if len(click.reason) > cards.REASON_MAX:
                raise _Refused(
                    "invalid_value",
                    f"The reason is longer than {cards.REASON_MAX} characters; shorten it.",
                    request,
                )
            repeated = action is Action.APPROVE and identity.user in request.approvals
            view = await self._decisions.submit_decision(
                request.namespace,
                request.name,
                identity,
                action,
                click.reason,
                Via.TEAMS,
                uid=request.uid,
            )
        except _Refused as refusal:
            return await self._refused(click, refusal)
        except UserLookupError as exc:
            log.warning("teams member lookup failed", error=str(exc)[:200])
            return Answer("Teams could not tell Greenlight who you are right now; try again.")
        except DecisionRefused as exc:  # audited and counted by submit_decision itself
            return await self._after_refusal(grant, f"Refused: {exc.message}")
        except Exception:
            log.exception("teams decision could not be recorded", action=click.verb)
            return Answer(_UNAVAILABLE)
        log.info(
            "teams decision recorded",
            request=_ref(view),
            user=identity.user,
            action=action.value,
            nonce=grant.nonce,
        )
        if view.phase.terminal:
            return Answer(f"Recorded: {view.phase.value}.", cards.resolved_card(view))
        if repeated:
            return Answer(f"Your approval of {_ref(view)} was already recorded.")
        return Answer(_confirmation(view, action))

    def refuse_unverified(self, reason: str, detail: str, transport: str) -> Awaitable[None]:
        """Count a request refused before it could be trusted, at once (before it is answered),
        and give the write of its audit record to await."""
        log.warning("teams activity refused", reason=reason, detail=detail, transport=transport)
        metrics.refuse(reason)
        return self._decisions.record_refused(
            Via.TEAMS,
            None,
            actor="teams:unverified",
            reason=reason,
            details={"transport": transport, "check": detail},
        )

    async def refuse_sender(
        self, reason: str, message: str, aad_object_id: str, details: Mapping[str, Any]
    ) -> None:
        """Count and audit an authentic activity refused for who sent it (another tenant)."""
        log.info("teams activity refused", reason=reason, aad_object_id=aad_object_id)
        metrics.refuse(reason)
        await self._decisions.record_refused(
            Via.TEAMS,
            None,
            actor=f"teams:{aad_object_id or 'unknown'}",
            reason=reason,
            details={**details, "message": message},
        )

    async def _card(self, click: CardClick, action: Action) -> tuple[CardGrant, RequestView]:
        try:
            grant = self._codec.verify(click.token)
        except InvalidToken as exc:
            raise _Refused("invalid_token", "This card was not issued by Greenlight.") from exc
        if grant.action is not action:
            raise _Refused("invalid_token", "This card was not issued by Greenlight.")
        request = await self._decisions.find_request_by_uid(grant.uid)
        if request is not None and request.plan_digest != grant.plan_digest:
            raise _Refused(
                "invalid_token",
                "This card was issued for another plan than the request now has.",
                request,
            )
        if request is None:
            raise _Refused("not_found", "This request no longer exists.")
        return grant, request

    async def _who(self, click: CardClick, request: RequestView) -> Identity:
        try:
            return await self._users.identity(click.clicker)
        except UnknownUser as exc:
            raise _Refused(exc.reason, exc.message, request) from exc

    async def _after_refusal(self, grant: CardGrant, text: str) -> Answer:
        """A refused attempt on a request that has ended shows the outcome card too, so a stale
        card (a click after expiry, after a kubectl decision) is brought up to date."""
        current = await self._decisions.find_request_by_uid(grant.uid)
        if current is not None and current.phase.terminal:
            return Answer(text, cards.resolved_card(current))
        return Answer(text)

    async def _refused(self, click: CardClick, refusal: _Refused) -> Answer:
        if refusal.reason in metrics.REFUSAL_REASONS:
            metrics.refuse(refusal.reason)
        log.info(
            "teams decision refused",
            reason=refusal.reason,
            aad_object_id=click.clicker.aad_object_id,
            request=_ref(refusal.request) if refusal.request else "",
        )
        await self._decisions.record_refused(
            Via.TEAMS,
            refusal.request,
            actor=f"teams:{click.clicker.aad_object_id or 'unknown'}",
            reason=refusal.reason,
            details={
                "transport": click.transport,
                "aad_object_id": click.clicker.aad_object_id,
                "action": click.verb,
                "message": refusal.message,
            },
        )
        text = f"Refused: {refusal.message}"
        request = refusal.request
        if request is not None and request.phase.terminal:
            return Answer(f"{text} ({already(request)})", cards.resolved_card(request))
        return Answer(text)


_UNAVAILABLE = (
    "Greenlight could not record your decision right now; try again, or decide with kubectl."
)


def _ref(request: RequestView) -> str:
    return f"{request.namespace}/{request.name}"


def _confirmation(request: RequestView, action: Action) -> str:
    if action is Action.DENY:
        return f"Recorded: you denied {_ref(request)}."
    needed = request.required_approvals
    return (
        f"Recorded: you approved {_ref(request)} "
        f"({needed} approval{'s' if needed != 1 else ''} required)."
    )
