"""A local fake of the Slack Web API and Socket Mode, for tests at every tier.

It is an aiohttp server on a free loopback port. Clients point their base URL at `api_url`
(`http://127.0.0.1:PORT/api/`) and call the methods Greenlight uses with Slack's documented
request and response shapes (`ok`, `error`, `ts`, `channel`, `message`, `metadata`, cursors):

    auth.test, chat.postMessage, chat.update, chat.postEphemeral, conversations.history,
    conversations.replies, views.open, users.info, apps.connections.open

`apps.connections.open` (app-level token only) hands out a WebSocket URL on the same server that
speaks the Socket Mode envelope protocol: `hello` on connect, envelopes with `envelope_id`, and
acknowledgements back from the client.

Every call is recorded (`calls`, `calls_to`, `wait_for_call`). Faults are injected per method or
for all methods (`"*"`): HTTP 429 with `Retry-After`, 5xx, Slack errors (`ok: false`), delays,
late responses (the call takes effect, its answer comes later) and a whole outage. The fake
also plays Slack's side of interactivity: it builds `block_actions` and `view_submission`
payloads, signs them with the v0 scheme (any secret, any timestamp) and POSTs them to an
endpoint, or pushes them over the Socket Mode connection and waits for the ack.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from greenlight.adapters.decisions import DecisionRefused
from greenlight.core.model import Action, Decision, Identity, Phase, RequestView, Via

BOT_TOKEN = "xoxb-fake-bot-token"
APP_TOKEN = "xapp-fake-app-token"
SIGNING_SECRET = "fake-signing-secret-0123456789abcdef"
TEAM_ID = "T0FAKE0001"
APP_ID = "A0FAKE0001"
BOT_ID = "B0FAKE0001"
BOT_USER_ID = "U0FAKEBOT1"

Payload = dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One Web API call as the fake received it (query, form and JSON arguments merged)."""

    method: str
    args: dict[str, Any]
    token: str
    at: float
    status: int  # the HTTP status the fake answered with
    peer: int = 0  # the caller's TCP port: calls over one kept-alive connection share it


@dataclass
class Fault:
    """What the next `times` calls of a method get instead of a normal answer."""

    times: int
    status: int = 200
    error: str = ""
    retry_after: int | None = None
    delay: float = 0.0
    channel: str = ""  # only calls for this channel; "" = any call


@dataclass(frozen=True)
class SignedRequest:
    """An interaction request exactly as Slack would send it: form body and signature headers."""

    body: bytes
    headers: dict[str, str]


@dataclass
class User:
    """A Slack account; the flags are those `users.info` reports (guests are `is_restricted`
    or `is_ultra_restricted`, Slack Connect users of another organization `is_stranger`)."""

    id: str
    email: str
    email_confirmed: bool = True
    is_bot: bool = False
    deleted: bool = False
    team_id: str = TEAM_ID
    is_restricted: bool = False
    is_ultra_restricted: bool = False
    is_stranger: bool = False
    enterprise_id: str = ""  # set: an Enterprise Grid user (`enterprise_user`)
    enterprise_teams: tuple[str, ...] = ()

    def as_slack(self) -> Payload:
        name = self.email.split("@", 1)[0]
        user: Payload = {
            "id": self.id,
            "team_id": self.team_id,
            "name": name,
            "real_name": name.title(),
            "deleted": self.deleted,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "is_admin": False,
            "is_restricted": self.is_restricted,
            "is_ultra_restricted": self.is_ultra_restricted,
            "is_email_confirmed": self.email_confirmed,
            "tz": "Etc/UTC",
            "profile": {"email": self.email, "real_name": name.title(), "display_name": name},
        }
        if self.is_stranger:
            user["is_stranger"] = True
        if self.enterprise_id:
            user["enterprise_user"] = {
                "id": self.id,
                "enterprise_id": self.enterprise_id,
                "enterprise_name": "Fake Grid",
                "teams": list(self.enterprise_teams or (self.team_id,)),
            }
        return user


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    acks: dict[str, asyncio.Future[Payload]] = field(default_factory=dict)


class FakeSlack:
    """The fake server; use `async with FakeSlack() as slack:`."""

    def __init__(
        self,
        *,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        signing_secret: str = SIGNING_SECRET,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.calls: list[Call] = []
        self.users: dict[str, User] = {}
        self.enterprise_id = ""  # the app's Enterprise Grid organization, as auth.test says
        self.trigger_ttl = 3.0  # Slack's trigger_id lifetime
        self.outage = False
        self.acks: list[Payload] = []
        self._messages: dict[str, list[Payload]] = {}  # channel -> top-level, oldest first
        self._replies: dict[tuple[str, str], list[Payload]] = {}  # (channel, parent ts)
        self._faults: dict[str, list[Fault]] = {}
        self._late: dict[str, list[Fault]] = {}  # answered normally, but only after a delay
        self._triggers: dict[str, float] = {}
        self._views: list[Payload] = []
        self._sockets: list[_Socket] = []
        self._ts = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for sock in self._sockets:
            await sock.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # -- scenario setup ---------------------------------------------------------------------

    def add_user(self, user_id: str, email: str, **flags: Any) -> User:
        """A Slack account `users.info` answers for; `flags` are `User` fields."""
        user = User(id=user_id, email=email, **flags)
        self.users[user_id] = user
        return user

    def fail(
        self,
        method: str,
        *,
        times: int = 1,
        status: int = 200,
        error: str = "",
        retry_after: int | None = None,
        channel: str = "",
    ) -> None:
        """The next `times` calls of `method` ("*" = any) answer with this status / error;
        with `channel`, only calls whose `channel` argument is that channel."""
        if status == 429 and not error:
            error = "ratelimited"
        if status >= 500 and not error:
            error = "internal_error"
        fault = Fault(
            times=times, status=status, error=error, retry_after=retry_after, channel=channel
        )
        self._faults.setdefault(method, []).append(fault)

    def delay(self, method: str, seconds: float, *, times: int = 1) -> None:
        """The next `times` calls of `method` are answered normally, `seconds` late."""
        self._faults.setdefault(method, []).append(Fault(times=times, delay=seconds))

    def respond_late(
        self, method: str, seconds: float, *, times: int = 1, channel: str = ""
    ) -> None:
        """The next `times` calls of `method` (for `channel`, when given) take effect and are
        recorded at once, but their response leaves `seconds` later: Slack stored the message,
        the caller has not heard yet."""
        self._late.setdefault(method, []).append(Fault(times=times, delay=seconds, channel=channel))

    def clear_faults(self) -> None:
        """Forget every injected fault, late response and outage: Slack is healthy again."""
        self._faults.clear()
        self._late.clear()
        self.outage = False

    def post_from_someone_else(self, channel: str, text: str, **extra: Any) -> str:
        """A message by a person or another app (history filler, metadata impostors)."""
        message = {"type": "message", "user": "U0SOMEONE1", "text": text, **extra}
        ts: str = self._append(channel, message)["ts"]
        return ts

    # -- inspection -------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def messages(self, channel: str) -> list[Payload]:
        """Top-level messages of a channel, oldest first, with metadata."""
        return list(self._messages.get(channel, []))

    def replies(self, channel: str, ts: str) -> list[Payload]:
        return list(self._replies.get((channel, ts), []))

    @property
    def views(self) -> list[Payload]:
        return list(self._views)

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[Call], bool] = lambda _call: True,
        within: float = 10.0,
    ) -> Call:
        """The first recorded call of `method` matching `predicate`, waiting for it if needed."""

        def found() -> Call | None:
            return next((c for c in self.calls_to(method) if predicate(c)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), within)
        call = found()
        assert call is not None
        return call

    # -- playing Slack's side of interactivity ----------------------------------------------

    def block_actions(
        self, *, user: str, action_id: str, value: str, channel: str, message_ts: str
    ) -> Payload:
        """A `block_actions` payload for a button click on a message (with a fresh trigger_id)."""
        trigger_id = self._issue_trigger()
        return {
            "type": "block_actions",
            "team": {"id": TEAM_ID, "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "token": "deprecated-verification-token",
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": trigger_id,
            "channel": {"id": channel, "name": "approvals"},
            "message": self._find(channel, message_ts) or {"ts": message_ts},
            "response_url": f"http://127.0.0.1:{self.port}/api/response_url",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": "greenlight_decision",
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def view_submission(self, *, user: str, view: Payload, reason: str | None) -> Payload:
        """A `view_submission` payload for a modal the app opened, with the reason typed in."""
        values: Payload = {}
        if reason is not None:
            values = {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
        return {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "trigger_id": self._issue_trigger(),
            "view": {**view, "id": view.get("id", "V0FAKE"), "state": {"values": values}},
        }

    def sign(
        self,
        payload: Mapping[str, Any],
        *,
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> SignedRequest:
        """The request Slack would send: form-encoded `payload`, v0 signature over the raw body."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return self.sign_body(body, secret=secret, timestamp=timestamp)

    def sign_body(
        self, body: bytes, *, secret: str | None = None, timestamp: int | None = None
    ) -> SignedRequest:
        """Any raw body signed with Slack's v0 scheme (`v0:<timestamp>:<body>`, HMAC-SHA256)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        key = (secret if secret is not None else self.signing_secret).encode()
        digest = hmac.new(key, b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": f"v0={digest}",
        }
        return SignedRequest(body=body, headers=headers)

    async def deliver(self, url: str, request: SignedRequest) -> tuple[int, float]:
        """POST a signed interaction; returns (HTTP status, seconds until the response)."""
        started = time.perf_counter()
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=request.body, headers=request.headers) as response,
        ):
            await response.read()
            return response.status, time.perf_counter() - started

    async def wait_for_socket(self, within: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: bool(self._live())), within)

    async def push(
        self, payload: Payload, *, envelope_id: str | None = None, within: float = 5.0
    ) -> Payload:
        """Send an `interactive` envelope over the newest socket; returns the client's ack."""
        await self.wait_for_socket(within)
        sock = self._live()[-1]
        envelope_id = envelope_id or secrets.token_hex(8)
        ack: asyncio.Future[Payload] = asyncio.get_running_loop().create_future()
        sock.acks[envelope_id] = ack
        envelope = {
            "envelope_id": envelope_id,
            "type": "interactive",
            "payload": payload,
            "accepts_response_payload": payload.get("type") == "view_submission",
        }
        await sock.ws.send_str(json.dumps(envelope))
        return await asyncio.wait_for(ack, within)

    # -- the server -------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(dict(await request.post()))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token = str(args.pop("token", "") or token)
        status, body, headers = await self._answer(method, args, token)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        port = int(peer[1]) if peer else 0
        self.calls.append(Call(method, args, token, time.time(), status, port))
        async with self._changed:
            self._changed.notify_all()
        late = _take(self._late, method, args)
        if late is not None:
            await asyncio.sleep(late.delay)
        return web.json_response(body, status=status, headers=headers)

    async def _answer(
        self, method: str, args: dict[str, Any], token: str
    ) -> tuple[int, Payload, dict[str, str]]:
        if self.outage:
            return 503, {"ok": False, "error": "service_unavailable"}, {}
        fault = _take(self._faults, method, args) or _take(self._faults, "*", args)
        if fault is not None:
            await asyncio.sleep(fault.delay)
            if fault.status == 429:
                headers = {"Retry-After": str(fault.retry_after if fault.retry_after else 1)}
                return 429, {"ok": False, "error": fault.error}, headers
            if fault.status != 200 or fault.error:
                return fault.status, {"ok": False, "error": fault.error}, {}
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token != expected:
            wrong_type = token in (self.app_token, self.bot_token)
            error = "not_allowed_token_type" if wrong_type else "invalid_auth"
            return 200, {"ok": False, "error": error}, {}
        result: Payload = handler(args)
        return 200, result, {}

    # Web API methods (only what Greenlight uses), answering like Slack documents.

    def _m_auth_test(self, _args: Payload) -> Payload:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake",
            "user": "greenlight",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
            **({"enterprise_id": self.enterprise_id} if self.enterprise_id else {}),
        }

    def _m_chat_postMessage(self, args: Payload) -> Payload:
        channel = str(args.get("channel", ""))
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        message = self._bot_message(args)
        parent = str(args.get("thread_ts") or "")
        if parent:
            root = self._find(channel, parent)
            if root is None:
                return {"ok": False, "error": "thread_not_found"}
            message["thread_ts"] = parent
            message["ts"] = self._next_ts()
            self._replies.setdefault((channel, parent), []).append(message)
            root["reply_count"] = len(self._replies[(channel, parent)])
            root["thread_ts"] = parent
        else:
            self._append(channel, message)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": _public(message)}

    def _m_chat_update(self, args: Payload) -> Payload:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        message = self._find(channel, ts)
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if message.get("bot_id") != BOT_ID:
            return {"ok": False, "error": "cant_update_message"}
        update = self._bot_message(args)
        for key in ("text", "blocks", "metadata"):
            if key in update:
                message[key] = update[key]
        message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": message.get("text", ""),
            "message": _public(message),
        }

    def _m_chat_postEphemeral(self, args: Payload) -> Payload:
        if not args.get("channel") or not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_conversations_history(self, args: Payload) -> Payload:
        channel = str(args.get("channel", ""))
        messages = list(reversed(self._messages.get(channel, [])))  # newest first
        oldest, latest = float(args.get("oldest") or 0), float(args.get("latest") or "inf")
        messages = [m for m in messages if oldest < float(m["ts"]) <= latest]
        return self._page(messages, args)

    def _m_conversations_replies(self, args: Payload) -> Payload:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        root = self._find(channel, ts)
        if root is None:
            return {"ok": False, "error": "thread_not_found"}
        return self._page([root, *self._replies.get((channel, ts), [])], args)

    def _m_views_open(self, args: Payload) -> Payload:
        issued = self._triggers.pop(str(args.get("trigger_id", "")), None)
        if issued is None:
            return {"ok": False, "error": "invalid_trigger_id"}
        if time.time() - issued > self.trigger_ttl:
            return {"ok": False, "error": "expired_trigger_id"}
        view = args.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        opened = {**view, "id": f"V{secrets.token_hex(5).upper()}", "app_id": APP_ID}
        self._views.append(opened)
        return {"ok": True, "view": opened}

    def _m_users_info(self, args: Payload) -> Payload:
        user = self.users.get(str(args.get("user", "")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user.as_slack()}

    def _m_apps_connections_open(self, _args: Payload) -> Payload:
        return {
            "ok": True,
            "url": f"ws://127.0.0.1:{self.port}/link/?ticket={secrets.token_hex(8)}",
        }

    # -- Socket Mode ------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sock = _Socket(ws)
        self._sockets.append(sock)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._live()),
                    "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": APP_ID},
                }
            )
        )
        async with self._changed:
            self._changed.notify_all()
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            ack = json.loads(message.data)
            self.acks.append(ack)
            future = sock.acks.pop(str(ack.get("envelope_id", "")), None)
            if future is not None and not future.done():
                future.set_result(ack)
        return ws

    def _live(self) -> list[_Socket]:
        return [sock for sock in self._sockets if not sock.ws.closed]

    # -- storage ----------------------------------------------------------------------------

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _append(self, channel: str, message: Payload) -> Payload:
        message["ts"] = self._next_ts()
        self._messages.setdefault(channel, []).append(message)
        return message

    def _find(self, channel: str, ts: str) -> Payload | None:
        return next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)

    def _bot_message(self, args: Payload) -> Payload:
        message: Payload = {
            "type": "message",
            "subtype": "bot_message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "text": str(args.get("text", "")),
        }
        for key in ("blocks", "metadata"):
            value = args.get(key)
            if isinstance(value, str):
                value = json.loads(value)
            if value:
                message[key] = value
        return message

    def _page(self, messages: list[Payload], args: Payload) -> Payload:
        limit = max(1, min(int(args.get("limit") or 100), 999))
        start = int(args.get("cursor") or 0)
        page = messages[start : start + limit]
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        more = start + limit < len(messages)
        return {
            "ok": True,
            "messages": [_public(m, with_metadata) for m in page],
            "has_more": more,
            "pin_count": 0,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _issue_trigger(self) -> str:
        trigger_id = f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = time.time()
        return trigger_id


def _take(faults: dict[str, list[Fault]], method: str, args: Payload) -> Fault | None:
    """The first fault that applies to this call of `method`, counting it as used once."""
    queue = faults.get(method) or []
    channel = str(args.get("channel", ""))
    fault = next((f for f in queue if f.channel in ("", channel)), None)
    if fault is None:
        return None
    fault.times -= 1
    if fault.times <= 0:
        queue.remove(fault)
    return fault


def _public(message: Payload, with_metadata: bool = True) -> Payload:
    """A message as the Web API returns it; metadata only when the caller asked for it."""
    shown = dict(message)
    if not with_metadata:
        shown.pop("metadata", None)
    return shown


# -- the operator's side, for tests of the Slack adapter alone ------------------------------


def pending_request(**overrides: Any) -> RequestView:
    """A Pending RequestView with plausible values; keyword arguments replace fields."""
    values: dict[str, Any] = {
        "namespace": "payments",
        "name": "destroy-prod-7x2k",
        "uid": "2b9c6a3e-5f1d-4c1e-9a8b-0d7e6f5a4b3c",
        "action": "pulumi destroy",
        "target": "production",
        "workflow_id": "wf-1234",
        "task_id": "task-9",
        "on_behalf_of": "carol",
        "plan_summary": "-12 resources, 0 to create",
        "plan_preview": "\n".join(f"- aws:s3:Bucket logs-{i} delete" for i in range(12)),
        "plan_digest": "sha256:" + "ab" * 32,
        "requested_by": "system:serviceaccount:ci:runner",
        "expires_at": datetime.now(UTC) + timedelta(minutes=30),
        "phase": Phase.PENDING,
        "required_approvals": 1,
        "slack_channel": "C0APPROVALS",
    }
    values.update(overrides)
    return RequestView(**values)


@dataclass
class StubDecisions:
    """The decision path reduced to its contract: who may decide, terminal is final, and a
    repeated approval by the same user is a no-op ("duplicate"), as in decisions.submit_decision.

    `allowed` lists the Kubernetes users RBAC would allow; every call and audit record is kept.
    """

    requests: dict[str, RequestView] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)
    submitted: list[tuple[str, str, Identity, Action, str, Via]] = field(default_factory=list)
    audits: list[dict[str, Any]] = field(default_factory=list)
    _audited: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_audited(self, reason: str, within: float = 5.0) -> None:
        """Wait until a refusal with `reason` was audited (handlers run after the ack)."""

        def reasons() -> list[str]:
            return [a["reason"] for a in self.audits]

        async with self._audited:
            await asyncio.wait_for(self._audited.wait_for(lambda: reason in reasons()), within)

    def add(self, request: RequestView) -> RequestView:
        self.requests[request.uid] = request
        return request

    async def submit_decision(
        self,
        namespace: str,
        name: str,
        identity: Identity,
        action: Action,
        reason: str,
        via: Via,
        *,
        uid: str = "",
    ) -> RequestView:
        self.submitted.append((namespace, name, identity, action, reason, via))
        request = next(
            r for r in self.requests.values() if (r.namespace, r.name) == (namespace, name)
        )
        if uid and request.uid != uid:
            raise DecisionRefused("not_found", f"{namespace}/{name} is another request now")
        if request.phase.terminal:
            by = request.decision.by if request.decision else ""
            raise DecisionRefused("already_decided", f"already {request.phase.value} by {by}")
        if identity.user not in self.allowed:
            raise DecisionRefused(
                "not_authorized", f"{identity.user} may not {action.value} this request"
            )
        if action is Action.APPROVE and identity.user in request.approvals:
            return request
        if action is Action.DENY and not reason:
            raise DecisionRefused("reason_required", "a deny needs a reason")
        approvals = (
            (*request.approvals, identity.user) if action is Action.APPROVE else request.approvals
        )
        done = action is Action.DENY or len(approvals) >= request.required_approvals
        phase = Phase.PENDING
        decision = None
        if done:
            phase = Phase.APPROVED if action is Action.APPROVE else Phase.DENIED
            decision = Decision(phase, identity.user, datetime.now(UTC), via, reason)
        updated = replace(request, approvals=approvals, phase=phase, decision=decision)
        self.requests[request.uid] = updated
        return updated

    async def find_request_by_uid(self, uid: str) -> RequestView | None:
        return self.requests.get(uid)

    async def record_audit(
        self,
        event: str,
        *,
        request: Mapping[str, Any] | None,
        actor: str,
        outcome: str,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        self.audits.append(
            {
                "event": event,
                "request": request,
                "actor": actor,
                "outcome": outcome,
                "reason": reason,
                "details": dict(details or {}),
            }
        )
        async with self._audited:
            self._audited.notify_all()
        return True
