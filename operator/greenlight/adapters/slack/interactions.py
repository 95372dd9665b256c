"""Slack interactions: button clicks and the deny modal, turned into authorized decisions.

Both transports (the HTTP endpoint in this module, Socket Mode in `socket.py`) authenticate the
payload their own way and then hand it to the same `InteractionHandler`, which

1. verifies the button token (tokens.py) — a tampered or foreign value is refused (invalid_token);
2. maps the Slack user to a Kubernetes identity (users.py) — unknown users are refused;
3. calls `submit_decision`, which authorizes exactly like the kubectl path (SubjectAccessReview,
   policy.approvers, self-approval ban, reason for deny, terminal requests) and audits it;
4. tells the person what happened in an ephemeral message, visible to them only.

Refusals decided here (before `submit_decision`) are audited and counted here; every attempt
that reaches `submit_decision` is audited and counted there, so each attempt is recorded once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from greenlight.adapters.bodies import TooLarge, read_bounded
from greenlight.adapters.chat import DecisionsPort
from greenlight.adapters.decisions import DecisionRefused
from greenlight.adapters.slack import blocks
from greenlight.adapters.slack.client import API_ERRORS, error_code
from greenlight.adapters.slack.tokens import ButtonToken, InvalidToken, TokenCodec
from greenlight.adapters.slack.users import UnknownUser, UserDirectory, UserLookupError
from greenlight.core.model import Action, Identity, RequestView, Via
from greenlight.telemetry import metrics

INTERACTIONS_PATH = "/slack/interactions"
# Slack's documented freshness bound for signed requests; also how long the replay cache remembers.
TIMESTAMP_WINDOW_SECONDS = 300
_MAX_BODY_BYTES = 1024 * 1024
# Anyone can POST to the endpoint, and the signature covers the body, so bodies are read before
# they can be checked: at most this many at once (more get 503), each within BODY_SECONDS (408).
MAX_BODIES_IN_FLIGHT = 16
BODY_SECONDS = 5.0

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Click:
    """One decision attempt as Slack described it, before anything is trusted."""

    slack_user: str
    channel: str
    token: str
    expected: Action
    transport: str
    reason: str = ""


class _Refused(Exception):
    """A refusal decided in this module: `reason` is the metric label, `message` the human text."""

    def __init__(self, reason: str, message: str, request: RequestView | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.request = request


class InteractionHandler:
    """Dispatches authenticated interaction payloads (block_actions, view_submission)."""

    def __init__(
        self,
        client: AsyncWebClient,
        codec: TokenCodec,
        users: UserDirectory,
        decisions: DecisionsPort,
    ) -> None:
        self._client = client
        self._codec = codec
        self._users = users
        self._decisions = decisions

    async def handle(self, payload: Mapping[str, Any], transport: str) -> None:
        """Act on one payload whose origin the transport has already verified.

        This runs after the acknowledgement, where nobody could receive an exception: failures
        are logged, and the person is told whenever the payload says who and where they are.
        """
        kind = payload.get("type")
        try:
            _PayloadShape.model_validate(payload)
        except ValidationError as exc:
            log.warning(
                "ignoring malformed slack interaction",
                type=str(kind)[:40],
                transport=transport,
                problems=exc.error_count(),
            )
            return
        try:
            if kind == "block_actions":
                await self._block_actions(payload, transport)
            elif kind == "view_submission":
                await self._view_submission(payload, transport)
            else:
                log.debug("ignoring slack interaction", type=kind, transport=transport)
        except Exception:
            log.exception("slack interaction failed", type=kind, transport=transport)

    def refuse_unverified(self, reason: str, transport: str, detail: str) -> Awaitable[None]:
        """Count a payload refused before it could be trusted (signature, replay) at once, before
        it is answered, and give the write of its audit record to await."""
        log.warning("slack interaction refused", reason=reason, transport=transport, detail=detail)
        metrics.refuse(reason)
        return self._decisions.record_refused(
            Via.SLACK,
            None,
            actor="slack:unverified",
            reason=reason,
            details={"transport": transport},
        )

    async def _block_actions(self, payload: Mapping[str, Any], transport: str) -> None:
        actions = payload.get("actions") or []
        action = actions[0] if actions and isinstance(actions[0], Mapping) else {}
        expected = {blocks.APPROVE_ACTION_ID: Action.APPROVE, blocks.DENY_ACTION_ID: Action.DENY}
        wanted = expected.get(str(action.get("action_id", "")))
        if wanted is None:
            return
        click = _Click(
            slack_user=_user_id(payload),
            channel=str((payload.get("channel") or {}).get("id", "")),
            token=str(action.get("value", "")),
            expected=wanted,
            transport=transport,
        )
        if wanted is Action.APPROVE:
            await self._decide(click)
            return
        try:
            grant, identity, request = await self._admit(click)
            if request.phase.terminal:
                raise _Refused("already_decided", _already(request), request)
        except _Refused as refusal:
            await self._refused(click, refusal)
            return
        except UserLookupError as exc:
            await self._unavailable(click, exc)
            return
        message_ts = str((payload.get("container") or {}).get("message_ts", ""))
        context = blocks.DenyModalContext(
            token=click.token, channel=click.channel, message_ts=message_ts
        )
        try:
            await self._client.views_open(
                trigger_id=str(payload.get("trigger_id", "")),
                view=blocks.deny_modal(request, context),
            )
        except API_ERRORS as exc:
            log.warning("slack views.open failed", error=error_code(exc), user=identity.user)
            await self._tell(click, "Slack could not open the deny form; please try again.")
        log.info("deny form opened", request=_ref(request), user=identity.user, nonce=grant.nonce)

    async def _view_submission(self, payload: Mapping[str, Any], transport: str) -> None:
        view = payload.get("view") or {}
        if view.get("callback_id") != blocks.DENY_VIEW_CALLBACK_ID:
            return
        try:
            context = blocks.DenyModalContext.decode(str(view.get("private_metadata", "")))
        except ValueError:
            refusal = _Refused("invalid_token", "This deny form was not issued by Greenlight.")
            await self._refused(_Click(_user_id(payload), "", "", Action.DENY, transport), refusal)
            return
        values = (view.get("state") or {}).get("values") or {}
        reason_input = (values.get(blocks.REASON_BLOCK_ID) or {}).get(blocks.REASON_ACTION_ID) or {}
        click = _Click(
            slack_user=_user_id(payload),
            channel=context.channel,
            token=context.token,
            expected=Action.DENY,
            transport=transport,
            reason=str(reason_input.get("value") or "").strip(),
        )
        await self._decide(click)

    async def _decide(self, click: _Click) -> None:
        try:
            _grant, identity, request = await self._admit(click)
            # A repeated approval is recorded once (the decision path answers "duplicate").
            repeated = click.expected is Action.APPROVE and identity.user in request.approvals
            await self._decisions.submit_decision(
                request.namespace,
                request.name,
                identity,
                click.expected,
                click.reason,
                Via.SLACK,
                uid=request.uid,
            )
        except _Refused as refusal:
            await self._refused(click, refusal)
            return
        except UserLookupError as exc:
            await self._unavailable(click, exc)
            return
        except DecisionRefused as exc:  # audited and counted by submit_decision itself
            await self._tell(click, f"Refused: {exc.message}")
            return
        except Exception:
            await self._tell(
                click,
                "Greenlight could not record your decision right now; please try again, "
                "or decide with kubectl.",
            )
            raise
        if repeated:
            await self._tell(click, f"Your approval of {_ref(request)} was already recorded.")
        else:
            await self._tell(click, _confirmation(request, click.expected))

    async def _admit(self, click: _Click) -> tuple[ButtonToken, Identity, RequestView]:
        """The checks every click passes before it reaches the decision path."""
        try:
            grant = self._codec.verify(click.token)
        except InvalidToken as exc:
            raise _Refused("invalid_token", "This button was not issued by Greenlight.") from exc
        if grant.action is not click.expected:
            raise _Refused("invalid_token", "This button was not issued by Greenlight.")
        request = await self._decisions.find_request_by_uid(grant.uid)
        try:
            identity = await self._users.identity(click.slack_user)
        except UnknownUser as exc:
            raise _Refused("unknown_user", exc.message, request) from exc
        if request is None:
            raise _Refused("not_found", "This request no longer exists.")
        return grant, identity, request

    async def _refused(self, click: _Click, refusal: _Refused) -> None:
        if refusal.reason in metrics.REFUSAL_REASONS:
            metrics.refuse(refusal.reason)
        log.info(
            "slack decision refused",
            reason=refusal.reason,
            slack_user=click.slack_user,
            request=_ref(refusal.request) if refusal.request else "",
        )
        await self._decisions.record_refused(
            Via.SLACK,
            refusal.request,
            actor=f"slack:{click.slack_user}",
            reason=refusal.reason,
            details={
                "transport": click.transport,
                "slack_user": click.slack_user,
                "action": click.expected.value,
                "message": refusal.message,
            },
        )
        await self._tell(click, f"Refused: {refusal.message}")

    async def _unavailable(self, click: _Click, exc: UserLookupError) -> None:
        log.warning("slack user lookup failed", slack_user=click.slack_user, error=str(exc))
        await self._tell(
            click, "Slack could not tell Greenlight who you are right now; please try again."
        )

    async def _tell(self, click: _Click, text: str) -> None:
        """An ephemeral message: only the person who clicked sees it."""
        if not click.channel or not click.slack_user:
            return
        try:
            await self._client.chat_postEphemeral(
                channel=click.channel, user=click.slack_user, text=text
            )
        except API_ERRORS as exc:
            log.warning("slack ephemeral reply failed", error=error_code(exc))


class ReplayCache:
    """Signed payloads already accepted within the timestamp window (per process)."""

    def __init__(self, window_seconds: float = TIMESTAMP_WINDOW_SECONDS) -> None:
        self._window = window_seconds
        self._seen: dict[str, float] = {}

    def first_time(self, key: str, now: float) -> bool:
        """True the first time `key` is offered within the window; False for a replay."""
        if len(self._seen) > 1024:
            self._seen = {k: t for k, t in self._seen.items() if t > now - self._window}
        seen_at = self._seen.get(key)
        if seen_at is not None and seen_at > now - self._window:
            return False
        self._seen[key] = now
        return True


class InteractionsEndpoint:
    """POST /slack/interactions: verify, acknowledge at once, then handle in the background."""

    def __init__(
        self,
        handler: InteractionHandler,
        signing_secret: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._handler = handler
        self._secret = signing_secret
        self._clock = clock
        self._replays = ReplayCache()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading = 0  # bodies being read now

    def app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_post(INTERACTIONS_PATH, self._receive)
        app.on_shutdown.append(self._drain)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        now = self._clock()
        refusal = _headers_refusal(timestamp, signature, now)  # before any of the body is read
        body = b""
        if refusal is None:
            read = await self._read(request)
            if isinstance(read, web.Response):
                return read
            body = read
            refusal = self._check(body, timestamp, signature, now)
        if refusal is not None:
            reason, detail = refusal
            self._spawn(self._handler.refuse_unverified(reason, "http", detail))
            return web.Response(status=401, text=f"refused: {reason}")
        try:
            payload = json.loads(parse_qs(body.decode())["payload"][0])
            if not isinstance(payload, dict):
                raise ValueError("payload is not an object")
        except (KeyError, IndexError, ValueError, UnicodeDecodeError, RecursionError):
            return web.Response(status=400, text="expected form field `payload` with JSON")
        self._spawn(self._handler.handle(payload, "http"))
        return web.Response(status=200)

    async def _read(self, request: web.Request) -> bytes | web.Response:
        """The body (bounded in size, time and how many are read at once), or the answer."""
        if request.content_length is not None and request.content_length > _MAX_BODY_BYTES:
            return web.Response(status=413, text="payload too large")
        if self._reading >= MAX_BODIES_IN_FLIGHT:
            return web.Response(status=503, text="busy; try again")
        self._reading += 1
        try:
            async with asyncio.timeout(BODY_SECONDS):
                return await read_bounded(request.content, _MAX_BODY_BYTES)
        except TooLarge:
            return web.Response(status=413, text="payload too large")
        except TimeoutError:
            return web.Response(status=408, text="the body was not sent in time")
        finally:
            self._reading -= 1

    def _check(
        self, body: bytes, timestamp: str, signature: str, now: float
    ) -> tuple[str, str] | None:
        """None when the request is authentic and new; else (refusal reason, detail)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return "invalid_signature", "body is not UTF-8 text, so it cannot come from Slack"
        verifier = SignatureVerifier(self._secret, clock=_FixedClock(now))
        if not verifier.is_valid(body=text, timestamp=timestamp, signature=signature):
            return "invalid_signature", "signature does not match the body"
        if not self._replays.first_time(signature, now):
            return "replayed", "this signed payload was already received"
        return None

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("slack interaction failed", error=repr(task.exception()))

    async def _drain(self, _app: web.Application) -> None:
        """Let in-flight decisions finish (bounded) before the server goes away."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)


def _headers_refusal(timestamp: str, signature: str, now: float) -> tuple[str, str] | None:
    """What the headers alone refuse: no signature, or a timestamp outside Slack's window."""
    if not timestamp or not signature:
        return "invalid_signature", "missing X-Slack-Signature or X-Slack-Request-Timestamp"
    try:
        sent_at = int(timestamp)
    except ValueError:
        return "invalid_signature", "timestamp is not an integer"
    if abs(now - sent_at) > TIMESTAMP_WINDOW_SECONDS:
        return "stale_timestamp", f"timestamp is {int(now - sent_at)} s away from now"
    return None


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


class _IdRef(_Shape):
    id: str = ""


class _ActionShape(_Shape):
    action_id: str = ""
    value: str = ""


class _ContainerShape(_Shape):
    message_ts: str = ""


class _ViewShape(_Shape):
    callback_id: str | None = None
    private_metadata: str = ""
    state: dict[str, dict[str, dict[str, dict[str, Any] | None] | None] | None] | None = None


class _PayloadShape(_Shape):
    """The parts of an interaction payload this module reads, with the types it reads them as.

    A signed payload is authentic but not necessarily well-formed; one that is not is ignored
    (and logged) instead of failing half-way through."""

    type: str
    user: _IdRef | None = None
    channel: _IdRef | None = None
    actions: list[_ActionShape] | None = None
    container: _ContainerShape | None = None
    trigger_id: str = ""
    view: _ViewShape | None = None


class _FixedClock(Clock):
    """SignatureVerifier's clock, pinned to the instant the window was already checked at."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def _user_id(payload: Mapping[str, Any]) -> str:
    return str((payload.get("user") or {}).get("id", ""))


def _ref(request: RequestView) -> str:
    return f"{request.namespace}/{request.name}"


def _already(request: RequestView) -> str:
    who = request.decision.by if request.decision else ""
    return f"already {request.phase.value}" + (f" by {who}" if who else "")


def _confirmation(request: RequestView, action: Action) -> str:
    """What was recorded; the announcement itself changes once the request is decided."""
    if action is Action.DENY:
        return f"Recorded: you denied {_ref(request)}."
    needed = request.required_approvals
    return (
        f"Recorded: you approved {_ref(request)} "
        f"({needed} approval{'s' if needed != 1 else ''} required)."
    )
