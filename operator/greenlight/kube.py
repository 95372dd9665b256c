"""The Kubernetes API, as the operator, the SDK, the CLI and the bench reach it.

`Credentials` is where the API server is and how to prove who we are, as kopf's own
`ConnectionInfo` (so kopf and Greenlight log in the same way), read again while it may
change. `operator_credentials` finds them as the operator runs: the pod's service account,
else a kubeconfig that kopf's reader understands (a token or a client certificate), else the
official client's loader, which also runs exec plugins and auth providers.

`Kube` is the operator's own access to ApprovalRequests, reviews, Events and the few other
objects it writes. It speaks HTTP with aiohttp on the operator's event loop: the official client
is synchronous (a thread per call) and validates every call's arguments with pydantic, which made
the client the largest cost of a request after the webhook itself (docs/benchmarks.md). The
operator does not import the official client unless its kubeconfig needs the official loader;
the SDK and the CLI use it (`load_client_config`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import structlog
import yaml
from opentelemetry import trace

from greenlight.core.model import GROUP, KIND, PLURAL, VERSION, Identity
from greenlight.telemetry import traces

if TYPE_CHECKING:
    import kopf
    import kubernetes

_tracer = trace.get_tracer("greenlight.operator")
_log = structlog.get_logger("greenlight.kube")
# Connections kept open to the API server (as many as the operator's calls in flight).
POOL = 32
# A call that takes longer fails (and is retried or fails closed by its caller).
REQUEST_TIMEOUT = 30.0
# A watch runs this long before it is opened again from the last version seen.
WATCH_SECONDS = 300
# The longest line a watch may send (one object; etcd stores at most about 1.5 MiB).
MAX_EVENT_BYTES = 4 * 1024 * 1024
# How long credentials read once are reused (a pod's token file is reread after this).
AUTH_REFRESH = 10.0
# Events are best effort: at most this many posts in flight, the rest are dropped (and logged).
EVENTS_IN_FLIGHT = 64
# The longest Event message the API server accepts.
EVENT_MESSAGE_MAX = 1024


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): read it again and retry."""


class NotFound(Exception):
    """The object does not exist (any more)."""


class ApiError(Exception):
    """Any other refusal of the API server: its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


class NoCredentials(ValueError):
    """No credentials for the API server could be found or read."""


class Credentials:
    """Where the API server is and how to prove who we are: `read()` gives a
    `kopf.ConnectionInfo`, called again when `refresh` seconds have passed since the last
    read. One TLS context serves every connection until a read names other TLS material (a
    renewed client certificate, another CA)."""

    def __init__(
        self, read: Callable[[], kopf.ConnectionInfo], refresh: float = AUTH_REFRESH
    ) -> None:
        self._read = read
        self._refresh = refresh
        self._info = read()
        if not self._info.server:
            raise NoCredentials("the credentials name no API server (the cluster's `server`)")
        self._at = time.monotonic()
        self._ssl: tuple[tuple[Any, ...], ssl.SSLContext] | None = None

    @property
    def server(self) -> str:
        return str(self._info.server).rstrip("/")

    def current(self) -> kopf.ConnectionInfo:
        if time.monotonic() - self._at >= self._refresh:
            self._info, self._at = self._read(), time.monotonic()
        return self._info

    def headers(self) -> dict[str, str]:
        """The `Authorization` header, if the credentials carry a token or a password."""
        return self.current().as_http_headers()

    def ssl_context(self) -> ssl.SSLContext:
        info = self.current()
        material = (
            info.insecure,
            info.ca_path,
            info.ca_data,
            info.certificate_path,
            info.certificate_data,
            info.private_key_path,
            info.private_key_data,
        )
        if self._ssl is None or self._ssl[0] != material:
            self._ssl = (material, info.as_ssl_context())
        return self._ssl[1]

    @classmethod
    def of_client(cls, api_client: kubernetes.client.ApiClient) -> Credentials:
        """The credentials an official `ApiClient` holds (its refresh hook runs on each read,
        so an exec plugin's token is renewed when it expires)."""
        return cls(lambda: _client_info(api_client))


def _client_info(api_client: kubernetes.client.ApiClient) -> kopf.ConnectionInfo:
    import kopf

    configuration = api_client.configuration
    bearer = configuration.auth_settings().get("BearerToken")
    header = str(bearer["value"]) if bearer and bearer.get("value") else ""
    scheme, _, token = header.rpartition(" ")
    return kopf.ConnectionInfo(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        username=configuration.username or None,
        password=configuration.password or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def operator_credentials() -> Credentials:
    """The operator's credentials: the pod's service account (its token file reread every
    AUTH_REFRESH seconds; the API server at `$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`
    as the official client finds it, so no DNS is needed); else `$KUBECONFIG` or
    `~/.kube/config` as kopf reads it, when its user has a token, a password or a client
    certificate, every file it names is an absolute path, and no user there gets its
    credentials from a plugin; else the official client's loader (exec plugins, auth
    providers and their renewal, relative paths, files it skips)."""
    import kopf

    settings = kopf.OperatorSettings()
    if kopf.login_with_service_account(settings=settings) is not None:

        def service_account() -> kopf.ConnectionInfo:
            info = kopf.login_with_service_account(settings=settings)
            if info is None:
                raise NoCredentials("the pod's service account token disappeared")
            return _in_cluster_server(info)

        return Credentials(service_account)
    try:
        info = None if _plugged_in() else kopf.login_with_kubeconfig(settings=settings)
    except Exception:  # anything kopf's reader cannot take: the official loader's turn
        info = None
    if info is not None and _understood(info):
        return Credentials(lambda: info, refresh=float("inf"))
    try:
        return Credentials.of_client(load_client_config())
    except Exception as exc:  # the official loader's ConfigException, or a file it cannot read
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise NoCredentials(
            f"no credentials for the Kubernetes API in the kubeconfig {where}: {exc}"
        ) from None


def _in_cluster_server(info: kopf.ConnectionInfo) -> kopf.ConnectionInfo:
    """kopf names the API server `kubernetes.default.svc`; the pod's environment gives its
    address (what the official client uses), which needs no cluster DNS."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        return info
    address = f"[{host}]" if ":" in host else host
    return dataclasses.replace(info, server=f"https://{address}:{port}")


def _plugged_in() -> bool:
    """Some user in the kubeconfig gets its credentials from an exec plugin or an auth
    provider, which only the official loader runs and renews (kopf's reader would keep an
    auth provider's first token for good). An unreadable kubeconfig counts as plugged in: the
    official loader then says what is wrong with it."""
    value = os.environ.get("KUBECONFIG") or "~/.kube/config"
    for part in value.split(os.pathsep):
        if not part.strip():
            continue
        try:
            config = yaml.safe_load(Path(part.strip()).expanduser().read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return True
        users = config.get("users") if isinstance(config, dict) else None
        for item in users if isinstance(users, list) else []:
            user = item.get("user") if isinstance(item, dict) else None
            if isinstance(user, dict) and ("exec" in user or "auth-provider" in user):
                return True
    return False


def _understood(info: kopf.ConnectionInfo) -> bool:
    """kopf's kubeconfig reader found credentials it can use as they are: a token, a password
    or a client certificate, and no path relative to the kubeconfig's folder (kopf would read
    it from the working directory)."""
    if not info.server:
        return False
    paths = [info.ca_path, info.certificate_path, info.private_key_path]
    if any(p is not None and not Path(str(p)).is_absolute() for p in paths):
        return False
    certificate = bool(info.certificate_path or info.certificate_data)
    key = bool(info.private_key_path or info.private_key_data)
    return bool(info.token or (info.username and info.password) or (certificate and key))


def load_client_config(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """The official client, for the SDK and the CLI: `kubeconfig` when given; else the pod's
    service account when running in a pod; else the default kubeconfig (`$KUBECONFIG` or
    `~/.kube/config`)."""
    import kubernetes

    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
    else:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    configuration.connection_pool_maxsize = POOL
    return kubernetes.client.ApiClient(configuration)


def _requests_path(namespace: str | None, name: str = "", subresource: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}"
    scope = f"/namespaces/{quote(namespace, safe='')}" if namespace is not None else ""
    path = f"{base}{scope}/{PLURAL}"
    if name:
        path += f"/{quote(name, safe='')}"
    if subresource:
        path += f"/{subresource}"
    return path


def configmaps(namespace: str) -> str:
    """The API path of a namespace's ConfigMaps."""
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/configmaps"


def _resource(collection: str) -> str:
    """The resource a collection's path names (its last segment), for the call's span."""
    return collection.rsplit("/", 1)[-1]


class Kube:
    """Typed, async access to ApprovalRequests, reviews and events."""

    def __init__(self, credentials: Credentials | None = None) -> None:
        self.credentials = credentials or operator_credentials()
        self._host = self.credentials.server
        self._session: aiohttp.ClientSession | None = None
        self._tls: ssl.SSLContext | None = None
        self._posting: set[asyncio.Task[None]] = set()
        self._retired: dict[aiohttp.ClientSession, asyncio.TimerHandle] = {}

    def _http(self) -> aiohttp.ClientSession:
        """The pool's session; a new one when the credentials' TLS material changed (the old
        one is closed once the calls still on it have timed out)."""
        tls = self.credentials.ssl_context()
        session = self._session
        if session is not None and not session.closed and tls is self._tls:
            return session
        if session is not None and not session.closed:
            self._retire(session)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=POOL),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            read_bufsize=MAX_EVENT_BYTES,
        )
        self._tls = tls
        return self._session

    def _retire(self, session: aiohttp.ClientSession) -> None:
        def close() -> None:
            self._retired.pop(session, None)
            task = asyncio.ensure_future(session.close())
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)

        self._retired[session] = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, close)

    async def close(self) -> None:
        for task in list(self._posting):
            task.cancel()
        for session, timer in list(self._retired.items()):
            timer.cancel()
            await session.close()
        self._retired.clear()
        if self._session is not None:
            await self._session.close()

    async def _request(
        self,
        span: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One call as a `k8s <verb> <resource>` span; the decoded answer, or Conflict,
        NotFound or ApiError."""
        headers = self.credentials.headers() | {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type
        with traces.child_span(_tracer, span, trace.SpanKind.CLIENT):
            async with self._http().request(
                method, self._host + path, data=data, params=params, headers=headers
            ) as response:
                payload = await response.read()
                status = response.status
        if status >= 400:
            raise _refusal(status, payload)
        answer = json.loads(payload)
        if not isinstance(answer, dict):
            raise ApiError(status, "the API server's answer is not a JSON object")
        return answer

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._request(
            "k8s get approvalrequests", "GET", _requests_path(namespace, name)
        )

    async def listing(
        self, namespace: str | None = None, limit: int = 500
    ) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        """Every ApprovalRequest (in `namespace`, or in all), `limit` at a time (bounded memory
        for a big cluster), each page with the list's resourceVersion ("" but on the last)."""
        token = ""
        while True:
            params = {"limit": str(limit)} | ({"continue": token} if token else {})
            result = await self._request(
                "k8s list approvalrequests", "GET", _requests_path(namespace), params=params
            )
            meta = result.get("metadata") or {}
            token = str(meta.get("continue") or "")
            yield list(result.get("items") or []), "" if token else str(meta["resourceVersion"])
            if not token:
                return

    async def watch(
        self, namespace: str | None, resource_version: str, seconds: int = WATCH_SECONDS
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The watch events (type, object) after `resource_version`, for at most `seconds`.

        The stream is read one event at a time: while the caller is busy nothing more is read
        (the API server's writes wait in the connection), so memory does not grow with a burst.
        An ERROR event (usually 410 Gone: the version is too old to watch from) is yielded as
        it comes; the caller lists again."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        # Its own connection, outside the pool that the calls share.
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.credentials.ssl_context()),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=seconds + 30),
                read_bufsize=MAX_EVENT_BYTES,
            ) as session,
            session.get(
                self._host + _requests_path(namespace),
                params=params,
                headers=self.credentials.headers(),
            ) as response,
        ):
            if response.status >= 400:
                raise _refusal(response.status, await response.read())
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    yield str(event.get("type")), event.get("object") or {}

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Merge `status` into the object's, only if the object is still at `resource_version`
        (else Conflict)."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}
        return await self._request(
            "k8s patch approvalrequests/status",
            "PATCH",
            _requests_path(namespace, name, "status"),
            body,
            content_type="application/merge-patch+json",
        )

    async def patch_annotations(
        self,
        namespace: str,
        name: str,
        annotations: Mapping[str, str | None],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"annotations": dict(annotations)}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return await self._request(
            "k8s patch approvalrequests",
            "PATCH",
            _requests_path(namespace, name),
            {"metadata": metadata},
            content_type="application/merge-patch+json",
        )

    async def allowed(self, identity: Identity, verb: str, namespace: str, name: str) -> bool:
        """A SubjectAccessReview: may `identity` use `verb` on this ApprovalRequest?"""
        review = access_review(identity, verb, namespace, name)
        result = await self._request(
            "k8s create subjectaccessreviews",
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            review,
        )
        status = result.get("status") or {}
        return status.get("allowed") is True and status.get("denied") is not True

    async def whoami(self) -> Identity:
        """The identity the API server sees for our own credentials (a SelfSubjectReview)."""
        review = await self._request(
            "k8s create selfsubjectreviews",
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        info = (review.get("status") or {}).get("userInfo") or {}
        if not info.get("username"):
            raise RuntimeError("the API server did not say who these credentials belong to")
        return Identity(user=str(info["username"]), groups=tuple(info.get("groups") or ()))

    async def read_object(self, collection: str, name: str) -> dict[str, Any] | None:
        """The object `name` of a collection (its API path); None when it does not exist."""
        try:
            return await self._request(
                f"k8s get {_resource(collection)}", "GET", f"{collection}/{quote(name, safe='')}"
            )
        except NotFound:
            return None

    async def merge_or_create(self, collection: str, body: Mapping[str, Any]) -> None:
        """Merge `body` into the object `collection/<its name>`, or create it when absent."""
        name = quote(str(body["metadata"]["name"]), safe="")
        try:
            await self._request(
                f"k8s patch {_resource(collection)}",
                "PATCH",
                f"{collection}/{name}",
                body,
                content_type="application/merge-patch+json",
            )
        except NotFound:
            await self._request(f"k8s create {_resource(collection)}", "POST", collection, body)

    async def replace_or_create(self, collection: str, body: Mapping[str, Any]) -> None:
        """Make the object `collection/<its name>` exactly `body` (created when absent)."""
        name = str(body["metadata"]["name"])
        current = await self.read_object(collection, name)
        if current is None:
            await self._request(f"k8s create {_resource(collection)}", "POST", collection, body)
            return
        version = (current.get("metadata") or {}).get("resourceVersion")
        replacement = dict(body) | {
            "metadata": dict(body["metadata"]) | {"resourceVersion": version}
        }
        await self._request(
            f"k8s replace {_resource(collection)}",
            "PUT",
            f"{collection}/{quote(name, safe='')}",
            replacement,
        )

    def post_event(
        self, namespace: str, name: str, uid: str, reason: str, message: str, kind: str = "Normal"
    ) -> None:
        """A Kubernetes Event on an ApprovalRequest, posted in the background (best effort: a
        failure is logged, never raised; beyond EVENTS_IN_FLIGHT posts, one is dropped)."""
        if len(self._posting) >= EVENTS_IN_FLIGHT:
            _log.warning("too many events in flight; one is dropped", reason=reason, name=name)
            return
        event = event_body(namespace, name, uid, reason, message, kind)
        task = asyncio.get_running_loop().create_task(self._post_event(namespace, event))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def _post_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        try:
            await self._request(
                "k8s create events",
                "POST",
                f"/api/v1/namespaces/{quote(namespace, safe='')}/events",
                event,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # best effort: the audit log is the record, not Events
            _log.warning("an event could not be posted", reason=event["reason"], error=str(exc))


def _refusal(status: int, payload: bytes) -> Exception:
    """The exception for an HTTP error answer, with the API server's own message."""
    try:
        message = str(json.loads(payload).get("message") or "")
    except (ValueError, AttributeError):
        message = ""
    message = message or payload[:200].decode("utf-8", "replace")
    if status == 409:
        return Conflict(message)
    if status == 404:
        return NotFound(message)
    return ApiError(status, message)


def access_review(identity: Identity, verb: str, namespace: str, name: str) -> dict[str, Any]:
    """The SubjectAccessReview asking whether `identity` may use `verb` on one ApprovalRequest."""
    spec: dict[str, Any] = {
        "user": identity.user,
        "resourceAttributes": {
            "group": GROUP,
            "resource": PLURAL,
            "verb": verb,
            "namespace": namespace,
            "name": name,
        },
    }
    if identity.groups:
        spec["groups"] = list(identity.groups)
    if identity.uid:
        spec["uid"] = identity.uid
    if identity.extra:
        spec["extra"] = {k: list(v) for k, v in identity.extra.items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def event_body(
    namespace: str, name: str, uid: str, reason: str, message: str, kind: str = "Normal"
) -> dict[str, Any]:
    """The Kubernetes Event the operator posts about an ApprovalRequest."""
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": namespace, "generateName": f"{name[:200]}."},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "namespace": namespace,
            "name": name,
            "uid": uid,
        },
        "type": kind,
        "reason": reason,
        "message": message[:EVENT_MESSAGE_MAX],
        "action": reason,
        "source": {"component": "greenlight"},
        "reportingComponent": "greenlight",
        "reportingInstance": "greenlight",
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
    }
