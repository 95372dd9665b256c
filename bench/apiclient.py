"""A small asyncio client for the API server: creates, patches and watches at full speed.

The benchmarks need many requests in flight from one process and exact timestamps for watch
events, so they talk HTTP to kube-apiserver directly (aiohttp, impersonation headers for other
users) instead of through the synchronous official client. Where to connect and with which
credentials comes from the same place as for the operator and the SDK (`greenlight.kube`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from greenlight.core.model import GROUP, PLURAL, VERSION
from greenlight.devcluster import ControlPlane
from greenlight.kube import Credentials, load_client_config

Obj = dict[str, Any]


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def collection(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


class ApiClient:
    """One aiohttp session against the control plane, as the admin or an impersonated user."""

    def __init__(self, plane: ControlPlane, *, connections: int = 64) -> None:
        client = load_client_config(str(plane.kubeconfig))
        credentials = Credentials.of_client(client)
        self.server = credentials.server
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=credentials.ssl_context(), limit=connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            headers=credentials.headers(),
        )
        client.close()  # type: ignore[no-untyped-call]  # kubernetes leaves it unannotated

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        as_user: str | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Obj:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if as_user is not None:
            headers["Impersonate-User"] = as_user
        data = json.dumps(body) if body is not None else None
        async with self._session.request(
            method, self.server + path, data=data, headers=headers, params=params
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError(response.status, text)
            result: Obj = json.loads(text) if text else {}
            return result

    async def text(self, path: str) -> str:
        """A plain-text GET (the API server's /metrics)."""
        async with self._session.get(self.server + path) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError(response.status, text)
            return text

    async def create(
        self, namespace: str, manifest: Mapping[str, Any], *, as_user: str | None = None
    ) -> Obj:
        return await self.request("POST", collection(namespace), manifest, as_user=as_user)

    async def annotate(
        self,
        namespace: str,
        name: str,
        annotations: Mapping[str, str | None],
        *,
        as_user: str | None = None,
    ) -> Obj:
        """What `kubectl annotate` sends: a JSON merge patch of metadata.annotations."""
        return await self.request(
            "PATCH",
            f"{collection(namespace)}/{name}",
            {"metadata": {"annotations": dict(annotations)}},
            as_user=as_user,
            content_type="application/merge-patch+json",
        )

    async def list(self, namespace: str, *, path: str | None = None) -> Obj:
        return await self.request("GET", path or collection(namespace))

    async def apply_raw(self, path: str, manifest: Mapping[str, Any]) -> Obj:
        """Create a cluster object, tolerating one that already exists."""
        try:
            return await self.request("POST", path, manifest)
        except ApiError as exc:
            if exc.status != 409:
                raise
            return {}

    async def watch(
        self,
        namespace: str,
        resource_version: str,
        on_event: Callable[[str, Obj, float], None],
        *,
        path: str | None = None,
    ) -> None:
        """Stream watch events to `on_event(type, object, arrival time)` until cancelled
        (ApprovalRequests in `namespace`, or the collection at `path`)."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "false",
            "timeoutSeconds": "3600",
        }
        async with self._session.get(
            self.server + (path or collection(namespace)), params=params
        ) as response:
            if response.status >= 400:
                raise ApiError(response.status, await response.text())
            # Lines are split here, not by aiohttp's readline: that one gives up on an event
            # larger than its buffer (an object with a big plan), and the watch would end.
            pending = b""
            async for chunk in response.content.iter_any():
                arrived = time.perf_counter()
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        event = json.loads(line)
                        on_event(str(event["type"]), event["object"], arrived)


@dataclass
class Waiter:
    predicate: Callable[[Obj], bool]
    future: asyncio.Future[float]


@dataclass
class Watcher:
    """A running watch on one namespace that resolves waiters when an object meets a condition.

    `until(name, predicate)` returns a future for the arrival time (perf_counter) of the first
    event in which `predicate(object)` holds; objects seen before are checked at once. `path`
    watches another collection (e.g. ConfigMaps); `slim` keeps `latest` without plan details
    (thousands of big plans would otherwise sit in the benchmark's own memory).
    """

    api: ApiClient
    namespace: str
    path: str | None = None
    slim: bool = False
    latest: dict[str, Obj] = field(default_factory=dict)
    _waiters: dict[str, list[Waiter]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _version: str = ""
    _listeners: list[Callable[[str, Obj, float], None]] = field(default_factory=list)

    async def start(self) -> None:
        listing = await self.api.list(self.namespace, path=self.path)
        for obj in listing.get("items", []):
            self.latest[obj["metadata"]["name"]] = self._kept(obj)
        rv = str(listing["metadata"]["resourceVersion"])
        self._task = asyncio.create_task(self._follow(rv))
        self._task.add_done_callback(self._ended)

    async def _follow(self, resource_version: str) -> None:
        """Watch from `resource_version`; when the API server ends the stream (it closes
        watchers that fall behind, e.g. on big objects), go on from the last version seen."""
        self._version = resource_version
        while True:
            await self.api.watch(self.namespace, self._version, self._event, path=self.path)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A watch that fails fails its waiters too (instead of leaving them to time out)."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.future.done():
                    waiter.future.set_exception(RuntimeError(f"the watch ended: {error!r}"))

    def _kept(self, obj: Obj) -> Obj:
        plan = (obj.get("spec") or {}).get("plan")
        if self.slim and isinstance(plan, dict) and "details" in plan:
            obj = {**obj, "spec": {**obj["spec"], "plan": {**plan, "details": ""}}}
        return obj

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait(self, event: asyncio.Event, within: float) -> None:
        """`event.wait()`, but raise at once if the watch ends first (its listeners would never
        hear from it again)."""
        assert self._task is not None, "start() first"
        waiting = asyncio.ensure_future(event.wait())
        done, _ = await asyncio.wait(
            {waiting, self._task}, timeout=within, return_when="FIRST_COMPLETED"
        )
        if waiting in done:
            return
        waiting.cancel()
        if self._task in done:
            raise RuntimeError(f"the watch ended: {self._task.exception()!r}")
        raise TimeoutError(f"not done within {within:.0f} s")

    def listen(self, listener: Callable[[str, Obj, float], None]) -> None:
        self._listeners.append(listener)

    def until(self, name: str, predicate: Callable[[Obj], bool]) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        seen = self.latest.get(name)
        if seen is not None and predicate_holds(predicate, seen):
            future.set_result(time.perf_counter())
            return future
        self._waiters.setdefault(name, []).append(Waiter(predicate, future))
        return future

    def _event(self, kind: str, obj: Obj, arrived: float) -> None:
        if self._task is not None and self._task.done():
            return
        if kind == "ERROR":  # e.g. 410 Gone: the version to go on from is no longer kept
            raise ApiError(int(obj.get("code") or 0), str(obj.get("message") or obj))
        name = obj["metadata"]["name"]
        self._version = str(obj["metadata"].get("resourceVersion") or self._version)
        if kind == "DELETED":
            self.latest.pop(name, None)
        else:
            self.latest[name] = self._kept(obj)
        for listener in self._listeners:
            listener(kind, obj, arrived)
        waiters = self._waiters.get(name)
        if not waiters:
            return
        remaining = []
        for waiter in waiters:
            if waiter.future.done():
                continue
            if predicate_holds(waiter.predicate, obj):
                waiter.future.set_result(arrived)
            else:
                remaining.append(waiter)
        self._waiters[name] = remaining


def predicate_holds(predicate: Callable[[Obj], bool], obj: Obj) -> bool:
    try:
        return predicate(obj)
    except (KeyError, TypeError, IndexError):
        return False


def phase(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase", ""))
