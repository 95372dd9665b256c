"""A local fake of Microsoft Teams' side of a bot, for tests at every tier.

One aiohttp server on a free loopback port, over HTTPS with a CA made for the run (msal talks to
https authorities only, and Greenlight sends its token to https Bot Connector URLs only). It
plays three services with their documented shapes:

- **Microsoft Entra ID** (the bot's token endpoint): the tenant's OpenID discovery document
  (`/{tenant}/v2.0/.well-known/openid-configuration`, which msal reads) and
  `POST /{tenant}/oauth2/v2.0/token` for the client-credentials grant, with the app password
  or a certificate's client assertion; tokens can be expired at will;
- **the Bot Framework's OpenID metadata and JWKS** (`/botframework/v1/.well-known/
  openidconfiguration`, `/botframework/v1/keys`): RSA keys generated per run, endorsed for
  `msteams`; keys can be rotated, and a key without the endorsement published;
- **the Bot Connector** under `service_url` (`/teams/`): send to conversation, reply to
  activity, update activity, get conversation member. Every call is recorded; faults are
  injected per operation (429 with Retry-After, 5xx), calls can take effect and answer late,
  and the whole connector can be down.

It also plays the Teams client: `click` builds the `invoke` activity (`adaptiveCard/action`)
that a click on a card's Action.Execute sends, or the `message` activity of its Action.Submit
fallback, signs a Bot Framework token for it — genuine, or forged in every way the verifier
must refuse — and POSTs it to the bot's messaging endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import aiohttp
import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from greenlight import pki

APP_ID = "8f0e2c4a-1b3d-4e5f-9a6b-7c8d9e0f1a2b"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT_ID = "0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
ISSUER = "https://api.botframework.com"
CONVERSATION = "19:greenlightapprovals@thread.tacv2"
TEAM_ID = "19:greenlightteam@thread.tacv2"

Payload = dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One Bot Connector or token call as the fake received it."""

    operation: str  # send | reply | update | member | token | metadata | jwks | openid
    path: str
    body: Payload
    at: float
    status: int


@dataclass
class Fault:
    times: int
    status: int
    retry_after: float | None = None


@dataclass
class Member:
    """A Teams user as the members API describes them (TeamsChannelAccount)."""

    oid: str
    upn: str
    email: str = ""
    tenant: str = TENANT_ID
    role: str = "user"  # user | guest | anonymous
    teams_id: str = ""

    def __post_init__(self) -> None:
        self.teams_id = self.teams_id or f"29:1{self.oid.replace('-', '')[:30]}"
        self.email = self.email or self.upn

    def as_teams(self) -> Payload:
        return {
            "id": self.teams_id,
            "name": self.upn.split("@", 1)[0].title(),
            "aadObjectId": self.oid,
            "email": self.email,
            "userPrincipalName": self.upn,
            "tenantId": self.tenant,
            "userRole": self.role,
        }


@dataclass
class Card:
    """An activity the bot posted (top-level, in `conversation`), with its history."""

    id: str
    conversation: str
    activity: Payload
    versions: list[Payload] = field(default_factory=list)  # earlier contents, oldest first
    replies: list[Payload] = field(default_factory=list)

    @property
    def content(self) -> Payload:
        attachments = self.activity.get("attachments") or [{}]
        content: Payload = attachments[0].get("content") or {}
        return content

    @property
    def edited(self) -> bool:
        return bool(self.versions)


@dataclass(frozen=True)
class Forgery:
    """How a click's Bot Framework token departs from a genuine one (all defaults: genuine)."""

    key: str = ""  # "unknown" (a key never published), "unendorsed", "rotated" (newest key)
    alg: str = ""  # "none" or "HS256" (signed with the app password)
    aud: str | None = None
    iss: str | None = None
    exp_offset: float = 3600.0
    nbf_offset: float = -60.0
    serviceurl: str | None = None  # the claim
    activity_service_url: str | None = None  # the activity's serviceUrl
    kid: str | None = None


class FakeTeams:
    """The fake; `async with FakeTeams(workdir) as teams:`."""

    def __init__(self, workdir: Path, *, app_password: str = "", app_id: str = APP_ID) -> None:
        self.workdir = workdir
        self.app_id = app_id
        self.app_password = app_password or secrets.token_urlsafe(24)
        self.certificate: x509.Certificate | None = None  # a client certificate, when registered
        self.calls: list[Call] = []
        self.members: dict[str, Member] = {}  # by Teams user id
        self.cards: dict[str, Card] = {}  # by activity id
        self.outage = False
        self.token_lifetime = 3599
        self._tokens: set[str] = set()
        self.issued: list[str] = []  # every access token handed out (none may be logged)
        self._faults: dict[str, list[Fault]] = {}
        self._late: dict[str, float] = {}
        self._ids = itertools.count(1_700_000_000_000)
        self._keys: list[tuple[str, rsa.RSAPrivateKey, tuple[str, ...]]] = []
        self._unknown_key = run_key("unknown")
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.ca_file = workdir / "fake-teams-ca.pem"
        self._server_ssl: ssl.SSLContext | None = None
        self._keys.append((f"kid-{secrets.token_hex(6)}", run_key("msteams"), ("msteams",)))
        # A published key that is not endorsed for msteams (the Bot Framework signs for others).
        self._keys.append((f"kid-{secrets.token_hex(6)}", run_key("webchat"), ("webchat",)))

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> FakeTeams:
        self._server_ssl = self._tls()
        app = web.Application()
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._tenant_oidc)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/botframework/v1/.well-known/openidconfiguration", self._metadata)
        app.router.add_get("/botframework/v1/keys", self._jwks)
        app.router.add_route("*", "/teams/v3/conversations{rest:.*}", self._connector)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._server_ssl)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _tls(self) -> ssl.SSLContext:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = pki.create_ca("fake-teams-ca")
        key, cert = pki.issue_certificate(
            ca_cert,
            ca_key,
            common_name="127.0.0.1",
            dns_names=["localhost"],
            ip_addresses=["127.0.0.1"],
            server=True,
        )
        self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        cert_file, key_file = self.workdir / "fake-teams.pem", self.workdir / "fake-teams.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context

    def client_ssl(self) -> ssl.SSLContext:
        """A client context that trusts the fake's CA (for in-process clients)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def service_url(self) -> str:
        return f"{self.base_url}/teams/"

    @property
    def authority_url(self) -> str:
        """GREENLIGHT_TEAMS_AUTHORITY_URL: msal's authority is this plus `/{tenant}`."""
        return self.base_url

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/botframework/v1/.well-known/openidconfiguration"

    # -- scenario setup ---------------------------------------------------------------------

    def add_member(self, oid: str, upn: str, **fields: Any) -> Member:
        member = Member(oid=oid, upn=upn, **fields)
        self.members[member.teams_id] = member
        return member

    def add_key(self, endorsements: tuple[str, ...], *, published: bool = True) -> str:
        """A new signing key (the newest endorsed for msteams signs genuine tokens)."""
        kid = f"kid-{secrets.token_hex(6)}"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if published:
            self._keys.append((kid, key, endorsements))
        return kid

    def rotate_key(self) -> str:
        """Publish a new msteams key and sign with it from now on; returns its kid."""
        return self.add_key(("msteams",))

    def register_certificate(self, certificate: x509.Certificate) -> None:
        self.certificate = certificate

    def fail(
        self, operation: str, status: int, *, times: int = 1, retry_after: float | None = None
    ) -> None:
        """The next `times` calls of `operation` (send, reply, update, member, token) fail."""
        self._faults.setdefault(operation, []).append(Fault(times, status, retry_after))

    def respond_late(self, operation: str, seconds: float) -> None:
        """The next call of `operation` takes effect at once and is answered `seconds` later."""
        self._late[operation] = seconds

    def clear_faults(self) -> None:
        self._faults.clear()
        self._late.clear()
        self.outage = False

    def expire_tokens(self) -> None:
        """Every token issued so far is refused from now on (as after its expiry)."""
        self._tokens.clear()

    # -- inspection -------------------------------------------------------------------------

    def calls_to(self, operation: str) -> list[Call]:
        return [c for c in self.calls if c.operation == operation]

    def cards_in(self, conversation: str = CONVERSATION) -> list[Card]:
        return [c for c in self.cards.values() if c.conversation == conversation]

    def cards_for(self, namespace: str, name: str, conversation: str = CONVERSATION) -> list[Card]:
        """The cards about the request `namespace/name` (its `Request` fact), oldest first."""
        ref = f"{namespace}/{name}"
        return [c for c in self.cards_in(conversation) if ref in runs_of(c.content)]

    @property
    def jwks_fetches(self) -> int:
        return len(self.calls_to("jwks"))

    # -- the Teams client: clicks -----------------------------------------------------------

    def activity(
        self,
        member: Member,
        card: Card,
        verb: str,
        *,
        reason: str = "",
        data: Mapping[str, Any] | None = None,
        fallback: bool = False,
        tenant: str | None = None,
        activity_id: str = "",
    ) -> Payload:
        """The activity a click on `card`'s `verb` action sends (Action.Execute, or its
        Action.Submit fallback)."""
        action = find_action(card.content, verb)
        merged = {**(data if data is not None else action["data"])}
        if verb == "deny" or reason:
            merged["reason"] = reason
        tenant_id = member.tenant if tenant is None else tenant
        common: Payload = {
            "id": activity_id or f"f:{secrets.token_hex(8)}",
            "channelId": "msteams",
            "serviceUrl": self.service_url,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "from": {"id": member.teams_id, "aadObjectId": member.oid, "name": member.upn},
            "recipient": {"id": f"28:{self.app_id}", "name": "Greenlight"},
            "conversation": {
                "id": f"{card.conversation};messageid={card.id}",
                "tenantId": tenant_id,
                "conversationType": "channel",
                "isGroup": True,
            },
            "channelData": {
                "tenant": {"id": tenant_id},
                "team": {"id": TEAM_ID},
                "channel": {"id": card.conversation},
            },
            "replyToId": card.id,
        }
        if fallback:
            return {**common, "type": "message", "text": "", "value": {**merged, "verb": verb}}
        return {
            **common,
            "type": "invoke",
            "name": "adaptiveCard/action",
            "value": {
                "action": {"type": "Action.Execute", "verb": verb, "data": merged},
                "trigger": "manual",
            },
        }

    def sign(self, activity: Mapping[str, Any], forgery: Forgery = Forgery()) -> str:
        """A Bot Framework token for `activity` (forged as `forgery` says)."""
        now = time.time()
        claims = {
            "serviceurl": forgery.serviceurl
            if forgery.serviceurl is not None
            else activity.get("serviceUrl"),
            "nbf": int(now + forgery.nbf_offset),
            "exp": int(now + forgery.exp_offset),
            "iss": forgery.iss if forgery.iss is not None else ISSUER,
            "aud": forgery.aud if forgery.aud is not None else self.app_id,
        }
        if forgery.alg == "none":
            header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": self._signing()[0]}))
            return f"{header}.{_b64(json.dumps(claims))}."
        if forgery.alg == "HS256":
            return jwt.encode(
                claims, self.app_password, algorithm="HS256", headers={"kid": self._signing()[0]}
            )
        kid, key = self._signing()
        if forgery.key == "unknown":
            kid, key = f"kid-{secrets.token_hex(6)}", self._unknown_key
        elif forgery.key == "unendorsed":
            kid, key, _ = next(k for k in self._keys if "msteams" not in k[2])
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": forgery.kid or kid})

    async def deliver(
        self, endpoint: str, activity: Mapping[str, Any], token: str | None
    ) -> tuple[int, Any]:
        """POST `activity` to the bot's messaging endpoint; (status, JSON answer or text)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with (
            aiohttp.ClientSession() as session,
            session.post(endpoint, json=activity, headers=headers) as response,
        ):
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except json.JSONDecodeError:
                return response.status, text

    def _signing(self) -> tuple[str, rsa.RSAPrivateKey]:
        kid, key, _ = [k for k in self._keys if "msteams" in k[2]][-1]
        return kid, key

    # -- Entra ID ---------------------------------------------------------------------------

    async def _tenant_oidc(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        self._record("openid", request.path, {}, 200)
        base = f"{self.base_url}/{tenant}"
        return web.json_response(
            {
                "issuer": f"{self.base_url}/{tenant}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v[0] for k, v in parse_qs(await request.text()).items()}
        tenant = request.match_info["tenant"]
        fault = self._fault("token")
        if fault is not None:
            status = fault.status
            self._record("token", request.path, _redacted(form), status)
            return web.json_response({"error": "temporarily_unavailable"}, status=status)
        good = (
            tenant == TENANT_ID
            and form.get("client_id") == self.app_id
            and form.get("grant_type") == "client_credentials"
            and form.get("scope") == "https://api.botframework.com/.default"
            and self._client_authenticated(form, request)
        )
        if not good:
            self._record("token", request.path, _redacted(form), 401)
            return web.json_response(
                {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client."},
                status=401,
            )
        token = f"fake-access-{secrets.token_urlsafe(24)}"
        self._tokens.add(token)
        self.issued.append(token)
        self._record("token", request.path, _redacted(form), 200)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": self.token_lifetime, "access_token": token}
        )

    def _client_authenticated(self, form: Mapping[str, str], request: web.Request) -> bool:
        if "client_secret" in form:
            return secrets.compare_digest(form["client_secret"], self.app_password)
        assertion = form.get("client_assertion")
        if assertion is None or self.certificate is None:
            return False
        try:
            jwt.decode(
                assertion,
                self.certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["PS256", "RS256"],
                audience=f"{self.base_url}/{request.match_info['tenant']}/oauth2/v2.0/token",
                options={"verify_aud": False},
            )
        except jwt.PyJWTError:
            return False
        return True

    # -- Bot Framework metadata -------------------------------------------------------------

    async def _metadata(self, request: web.Request) -> web.Response:
        self._record("metadata", request.path, {}, 200)
        return web.json_response(
            {
                "issuer": ISSUER,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": f"{self.base_url}/botframework/v1/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self._record("jwks", request.path, {}, 200)
        keys = []
        for kid, key, endorsements in self._keys:
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "endorsements": list(endorsements)})
        return web.json_response({"keys": keys})

    # -- Bot Connector ----------------------------------------------------------------------

    async def _connector(self, request: web.Request) -> web.StreamResponse:
        parts = [unquote(p) for p in request.match_info["rest"].strip("/").split("/") if p]
        method = request.method
        operation = _operation(method, parts)
        body: Payload = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                return self._answer(operation, request, {}, 400, {"error": "bad json"})
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") or authorization[7:] not in self._tokens:
            return self._answer(
                operation,
                request,
                body,
                401,
                {"message": "Authorization has been denied for this request."},
            )
        if self.outage:
            return self._answer(operation, request, body, 503, {"error": "ServiceUnavailable"})
        fault = self._fault(operation)
        if fault is not None:
            headers = (
                {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            )
            return self._answer(operation, request, body, fault.status, {"error": "fault"}, headers)
        status, answer = self._act(operation, parts, body)
        delay = self._late.pop(operation, 0.0)
        if delay:
            self._record(operation, request.path, body, status)
            await asyncio.sleep(delay)
            return web.json_response(answer, status=status)
        return self._answer(operation, request, body, status, answer)

    def _act(self, operation: str, parts: list[str], body: Payload) -> tuple[int, Payload]:
        if operation == "send":
            card = Card(
                id=str(next(self._ids)), conversation=parts[0], activity=copy.deepcopy(body)
            )
            self.cards[card.id] = card
            return 201, {"id": card.id}
        if operation == "reply":
            parent = self.cards.get(parts[2])
            if parent is None:
                return 404, {"error": {"code": "NotFound"}}
            reply = {**copy.deepcopy(body), "id": str(next(self._ids))}
            parent.replies.append(reply)
            return 201, {"id": reply["id"]}
        if operation == "update":
            edited = self.cards.get(parts[2])
            if edited is None:
                return 404, {"error": {"code": "NotFound"}}
            edited.versions.append(edited.activity)
            edited.activity = copy.deepcopy(body)
            return 200, {"id": edited.id}
        if operation == "member":
            member = self.members.get(parts[2])
            if member is None:
                return 404, {"error": {"code": "MemberNotFoundInConversation"}}
            return 200, member.as_teams()
        return 404, {"error": {"code": "BadSyntax"}}

    def _answer(
        self,
        operation: str,
        request: web.Request,
        body: Payload,
        status: int,
        answer: Payload,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self._record(operation, request.path, body, status)
        return web.json_response(answer, status=status, headers=dict(headers or {}))

    def _fault(self, operation: str) -> Fault | None:
        queue = self._faults.get(operation) or []
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault

    def _record(self, operation: str, path: str, body: Payload, status: int) -> None:
        self.calls.append(Call(operation, path, copy.deepcopy(body), time.time(), status))


_RUN_KEYS: dict[str, rsa.RSAPrivateKey] = {}


def run_key(role: str) -> rsa.RSAPrivateKey:
    """A key generated once per test run for `role` (RSA generation is slow)."""
    if role not in _RUN_KEYS:
        _RUN_KEYS[role] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _RUN_KEYS[role]


def find_action(card: Mapping[str, Any], verb: str) -> Payload:
    """The Action.Execute with `verb` anywhere in `card` (the Deny form nests it)."""

    def walk(value: Any) -> Payload | None:
        if isinstance(value, dict):
            if value.get("type") == "Action.Execute" and value.get("verb") == verb:
                return value
            for item in value.values():
                found = walk(item)
                if found is not None:
                    return found
        elif isinstance(value, list):
            for item in value:
                found = walk(item)
                if found is not None:
                    return found
        return None

    found = walk(card)
    if found is None:
        raise AssertionError(f"the card has no {verb!r} action")
    return found


def has_actions(card: Mapping[str, Any]) -> bool:
    return bool(card.get("actions"))


def text_of(card: Mapping[str, Any]) -> str:
    """Everything a person reads on the card."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("text"), str):
                parts.append(value["text"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(card.get("body") or [])
    return "\n".join(parts)


def runs_of(card: Mapping[str, Any]) -> list[str]:
    """The text of every TextRun on the card (where requesters' words are shown)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("type") == "TextRun":
                found.append(str(value.get("text", "")))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(card)
    return found


def _operation(method: str, parts: list[str]) -> str:
    if method == "POST" and len(parts) == 2 and parts[1] == "activities":
        return "send"
    if method == "POST" and len(parts) == 3 and parts[1] == "activities":
        return "reply"
    if method == "PUT" and len(parts) == 3 and parts[1] == "activities":
        return "update"
    if method == "GET" and len(parts) == 3 and parts[1] == "members":
        return "member"
    return "other"


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _redacted(form: Mapping[str, str]) -> Payload:
    return {
        k: ("<redacted>" if k in {"client_secret", "client_assertion"} else v)
        for k, v in form.items()
    }
