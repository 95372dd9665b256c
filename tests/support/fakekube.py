"""An in-memory stand-in for `greenlight.kube.Kube`: ApprovalRequests with resourceVersions,
the status and annotation patches the operator makes (with their preconditions), a table of RBAC
answers, and a record of every watch event a real API server would have sent.

It behaves as the API server does where the operator depends on it: a write with a stale
resourceVersion is a Conflict, a write to a missing object is NotFound, a write that changes
nothing does not bump the resourceVersion, and every object returned is a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests.support.manifests import approval_request
from tests.support.marks import stamp

from greenlight.core.model import ANN_REQUESTED_BY, Identity
from greenlight.core.timefmt import format_time, now
from greenlight.kube import Conflict, Kube, NotFound

OPERATOR = Identity("system:serviceaccount:greenlight:greenlight", ("system:serviceaccounts",))
Key = tuple[str, str]


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    body: dict[str, Any]


@dataclass(frozen=True)
class PostedEvent:
    """A Kubernetes Event the operator posted on an ApprovalRequest."""

    namespace: str
    name: str
    uid: str
    reason: str
    message: str
    type: str


def merged(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`patch` applied to `target` as a JSON merge patch (RFC 7386): None deletes a key,
    mappings merge, everything else (lists included) replaces."""
    result = copy.deepcopy(dict(target))
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        elif isinstance(value, Mapping):
            result[key] = merged({}, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class FakeKube(Kube):
    """The Kube interface over a dict. `calls` names every call made, in order."""

    def __init__(self, operator: Identity = OPERATOR, page_size: int = 2) -> None:
        # No API client: nothing here talks to a server.
        self.objects: dict[Key, dict[str, Any]] = {}
        self.rbac: dict[tuple[str, str, str], bool] = {}
        self.events: list[WatchEvent] = []
        self.calls: list[str] = []
        self.posted: list[PostedEvent] = []
        self.operator = operator
        self.page_size = page_size
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)
        self._intercepts: dict[str, list[Callable[[], object]]] = {}
        self._last_version = 0
        self._expired = False
        self._changed = asyncio.Event()

    # What tests do to the store (as another client of the API server would).

    def create(
        self, obj: Mapping[str, Any], *, uid: str = "", created: datetime | None = None
    ) -> dict[str, Any]:
        body = copy.deepcopy(dict(obj))
        meta = body.setdefault("metadata", {})
        key = (str(meta["namespace"]), str(meta["name"]))
        if key in self.objects:
            raise Conflict(f"{key[0]}/{key[1]} already exists")
        meta["uid"] = uid or f"uid-{next(self._uids)}"
        meta["creationTimestamp"] = format_time(created or now())
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[key] = body
        return self._emit("ADDED", body)

    def delete(self, namespace: str, name: str) -> dict[str, Any]:
        """Remove the object; returns it as the DELETED watch event carries it."""
        body = self.objects.pop((namespace, name), None)
        if body is None:
            raise NotFound(f"{namespace}/{name}")
        body["metadata"]["resourceVersion"] = str(next(self._versions))
        return self._emit("DELETED", body)

    def touch(self, namespace: str, name: str, **annotations: str) -> dict[str, Any]:
        """Someone else's write: a new resourceVersion (and, if given, annotations)."""
        body = self._stored(namespace, name)
        extra = annotations or {"example.com/touched": body["metadata"]["resourceVersion"]}
        return self._write(body, {"metadata": {"annotations": extra}})

    def intercept(self, method: str, action: Callable[[], object]) -> None:
        """Run `action` once, just before the next call of `method`: it may raise (a failure
        of that call) or change the store (so that the call meets a real conflict)."""
        self._intercepts.setdefault(method, []).append(action)

    def allow(self, user: str, verb: str, namespace: str, allowed: bool = True) -> None:
        self.rbac[(user, verb, namespace)] = allowed

    def stored(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._stored(namespace, name))

    # The Kube interface.

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        self._note("get")
        return self.stored(namespace, name)

    async def listing(
        self, namespace: str | None = None, limit: int = 500
    ) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        self._note("listing")
        items = [
            copy.deepcopy(body)
            for (ns, _), body in sorted(self.objects.items())
            if namespace is None or ns == namespace
        ]
        version = str(self._last_version)
        size = min(limit, self.page_size)
        starts = range(0, max(len(items), 1), size)
        for start in starts:
            yield items[start : start + size], version if start == starts[-1] else ""

    async def watch(
        self, namespace: str | None, resource_version: str, seconds: int = 300
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The events after `resource_version`, as they happen; ends after `seconds`, or at
        once with an ERROR (410) when `expire_watches` was called."""
        self._note("watch")
        deadline = asyncio.get_running_loop().time() + seconds
        after = int(resource_version)
        while True:
            if self._expired:
                self._expired = False
                yield "ERROR", {"kind": "Status", "code": 410}
                return
            for event in list(self.events):
                meta = event.body["metadata"]
                if int(meta["resourceVersion"]) > after and namespace in {None, meta["namespace"]}:
                    after = int(meta["resourceVersion"])
                    yield event.type, copy.deepcopy(event.body)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.05))

    def expire_watches(self) -> None:
        """The next watch read ends with 410 Gone (its version compacted away)."""
        self._expired = True
        self._changed.set()

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        self._note("patch_status")
        body = self._current(namespace, name, resource_version)
        return self._write(body, {"status": dict(status)})

    async def patch_annotations(
        self,
        namespace: str,
        name: str,
        annotations: Mapping[str, str | None],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        self._note("patch_annotations")
        body = self._current(namespace, name, resource_version)
        return self._write(body, {"metadata": {"annotations": dict(annotations)}})

    async def allowed(self, identity: Identity, verb: str, namespace: str, name: str) -> bool:
        self._note("allowed")
        return self.rbac.get((identity.user, verb, namespace), False)

    async def whoami(self) -> Identity:
        self._note("whoami")
        return self.operator

    def post_event(
        self, namespace: str, name: str, uid: str, reason: str, message: str, kind: str = "Normal"
    ) -> None:
        self._note("post_event")
        self.posted.append(PostedEvent(namespace, name, uid, reason, message, kind))

    # Internals.

    def _note(self, method: str) -> None:
        self.calls.append(method)
        pending = self._intercepts.get(method)
        if pending:
            pending.pop(0)()

    def _stored(self, namespace: str, name: str) -> dict[str, Any]:
        body = self.objects.get((namespace, name))
        if body is None:
            raise NotFound(f"approvalrequests {namespace}/{name} not found")
        return body

    def _current(self, namespace: str, name: str, resource_version: str | None) -> dict[str, Any]:
        body = self._stored(namespace, name)
        stored = body["metadata"]["resourceVersion"]
        if resource_version is not None and resource_version != stored:
            raise Conflict(f"{namespace}/{name} is at {stored}, not {resource_version}")
        return body

    def _write(self, body: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
        updated = merged(body, patch)
        if updated == body:
            return copy.deepcopy(body)  # a no-op write: no new version, no event
        updated["metadata"]["resourceVersion"] = str(next(self._versions))
        meta = updated["metadata"]
        self.objects[(meta["namespace"], meta["name"])] = updated
        return self._emit("MODIFIED", updated)

    def _emit(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        self._last_version = int(body["metadata"]["resourceVersion"])
        self.events.append(WatchEvent(kind, copy.deepcopy(body)))
        self._changed.set()
        return copy.deepcopy(body)


def create_request(
    kube: FakeKube,
    namespace: str,
    name: str,
    *,
    requester: str | None = "alice",
    uid: str = "",
    created: datetime | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """Create a request as it is after admission: stamped for `requester` with the test key
    (tests/support/marks.py), or unstamped when `requester` is None (created while no webhook
    covered it). Keyword arguments replace spec fields, as in `approval_request`."""
    manifest = approval_request(name, namespace, **spec)
    moment = created or now()
    manifest["metadata"]["creationTimestamp"] = format_time(moment)
    if requester is not None:
        manifest["metadata"]["annotations"] = {ANN_REQUESTED_BY: stamp(manifest, requester)}
    return kube.create(manifest, uid=uid, created=moment)
