"""What the operator remembers about each live request, and forgets when it is deleted.

Keyed by uid, small and bounded by the number of live requests (no bodies, no plans):

- where it is (namespace, name), so that a chat button, which names a uid, finds its request
  (`listed` tells when a uid it does not know is not a live request: once every watched scope
  was listed, since this replica became active);
- when it was created, while it is pending: the pending gauges
  (`greenlight_requests_pending`, `greenlight_oldest_pending_request_age_seconds`);
- when its execution was claimed, while no finish is reported: the unfinished-execution
  gauges (`greenlight_executions_unfinished`, `..._oldest_unfinished_execution_age_seconds`);
- who asked to delete it, as the admission webhook saw the DELETE (for the `deleted` record);
- the resourceVersion the operator last reconciled or wrote, so that a watch event that is not
  newer (the echo of its own status write, a late or repeated event, a list after a watch gap)
  costs nothing. resourceVersions are compared as integers, as etcd issues them; a version
  that is not one is never taken as stale.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from greenlight.core.model import Phase
from greenlight.core.request import Request
from greenlight.telemetry import metrics


def _version(resource_version: str) -> int | None:
    return int(resource_version) if resource_version.isdigit() else None


MAX_DELETERS = 4  # names kept per request from the admission reviews of its deletes
MAX_DELETER_CHARS = 256  # of each (a Kubernetes user name is far shorter; a forged one need not be)


@dataclass
class Ledger:
    where: dict[str, tuple[str, str]] = field(default_factory=dict)
    _pending: dict[str, float] = field(default_factory=dict)
    _versions: dict[str, int] = field(default_factory=dict)
    _deleters: dict[str, list[str]] = field(default_factory=dict)
    _running: dict[str, float] = field(default_factory=dict)
    listed: asyncio.Event = field(default_factory=asyncio.Event)

    def place(self, request: Request) -> None:
        """Remember where `request` is before it is reconciled (a list found work left on it),
        so that a chat button on it finds it meanwhile."""
        self.where[request.uid] = (request.namespace, request.name)

    def saw(self, request: Request) -> None:
        """Remember `request` as reconciled at its resourceVersion, with its current status."""
        self.where[request.uid] = (request.namespace, request.name)
        version = _version(request.resource_version)
        if version is not None and version > self._versions.get(request.uid, -1):
            self._versions[request.uid] = version
        if request.status.phase is Phase.PENDING:
            self._pending[request.uid] = request.created.timestamp()
        else:
            self._pending.pop(request.uid, None)
        metrics.REQUESTS_PENDING.set(len(self._pending))
        execution = request.status.execution
        if execution is not None and execution.finished_at is None:
            self._running[request.uid] = execution.started_at.timestamp()
        else:
            self._running.pop(request.uid, None)
        metrics.EXECUTIONS_UNFINISHED.set(len(self._running))

    def stale(self, uid: str, resource_version: str) -> bool:
        """Whether an event at `resource_version` is no newer than what was reconciled."""
        version = _version(resource_version)
        known = self._versions.get(uid)
        return version is not None and known is not None and version <= known

    def deleting(self, uid: str, user: str) -> None:
        """The admission webhook saw `user` ask to delete `uid` (kept for live requests only;
        up to MAX_DELETERS different names, in the order they came, each cut to
        MAX_DELETER_CHARS)."""
        if uid not in self.where:
            return
        names = self._deleters.setdefault(uid, [])
        if len(user) > MAX_DELETER_CHARS:
            user = user[:MAX_DELETER_CHARS] + "…"
        if user not in names and len(names) < MAX_DELETERS:
            names.append(user)

    def deleters(self, uid: str) -> tuple[str, ...]:
        """Every name the delete reviews of `uid` gave: one when the deleter is known. Several
        (two people deleting at once, or reviews forged to the webhook port to frame someone)
        name nobody for certain."""
        return tuple(self._deleters.get(uid, ()))

    def forget(self, uid: str) -> None:
        self._deleters.pop(uid, None)
        self.where.pop(uid, None)
        self._versions.pop(uid, None)
        self._pending.pop(uid, None)
        self._running.pop(uid, None)
        metrics.REQUESTS_PENDING.set(len(self._pending))
        metrics.EXECUTIONS_UNFINISHED.set(len(self._running))

    def clear(self) -> None:
        """Forget every request (this replica stands by: another one tracks them)."""
        self.listed.clear()
        for uid in list(self.where):
            self.forget(uid)

    def lives_at(self, namespace: str, name: str) -> bool:
        """Whether a live request is known under this name (a scan: for deletes only)."""
        return (namespace, name) in self.where.values()

    def locate(self, uid: str) -> tuple[str, str] | None:
        return self.where.get(uid)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def oldest_age(self) -> float:
        return time.time() - min(self._pending.values()) if self._pending else 0.0

    def oldest_unfinished_age(self) -> float:
        return time.time() - min(self._running.values()) if self._running else 0.0
