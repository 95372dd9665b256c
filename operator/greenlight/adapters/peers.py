"""Which replica processes requests.

Replicas keep alive in kopf's peering object (kopf writes each one's priority, lifetime and when
it was last seen); the requests are watched by Greenlight itself (adapters/watch.py), so it
reads the same object and applies kopf's rule: a replica is active while no other live peer has
a priority as high as its own (two at the same priority both stand by, as kopf's do). A peer is
live until its last keep-alive plus its lifetime; the rule is looked at again every second, so a
standby takes over within the lifetime of a replica that died.

Until the peering object is listed and holds this replica's own live keep-alive, a replica is
not active (failing closed: a missing CRD, missing rights or a deleted peering object keep it
standing by, never both replicas acting; and a replica that just started waits until kopf has
announced it, so the peer it may outrank has seen it too). Run standalone (no peering name), a
replica is active from the start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from greenlight.adapters.informer import Informer
from greenlight.kube import Credentials

_log = structlog.get_logger("greenlight.peers")
RECHECK_SECONDS = 1.0


def peering_paths(namespaces: Sequence[str]) -> list[str]:
    """Where kopf keeps the peering objects: one cluster-wide, or one per watched namespace."""
    if not namespaces:
        return ["/apis/kopf.dev/v1/clusterkopfpeerings"]
    return [f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings" for ns in namespaces]


MAX_LIFETIME = timedelta(hours=1)  # a peer claiming longer is taken at this


def outranked_by(
    peering: Mapping[str, Any] | None, identity: str, priority: int, at: datetime
) -> list[str]:
    """The live peers in one peering object whose priority is at least `priority`."""
    found = []
    for peer, info in _peers(peering).items():
        if peer == identity:
            continue
        live = _live_rank(info, at)
        if live is not None and live >= priority:
            found.append(peer)
    return found


def announced(peering: Mapping[str, Any] | None, identity: str, at: datetime) -> bool:
    """Whether this replica's own keep-alive is in the peering object, and live."""
    info = _peers(peering).get(identity)
    return info is not None and _live_rank(info, at) is not None


def _peers(peering: Mapping[str, Any] | None) -> Mapping[str, Any]:
    peers = (peering or {}).get("status") or {}
    return peers if isinstance(peers, Mapping) else {}


def _live_rank(info: object, at: datetime) -> int | None:
    """A peer's priority while it is live; None when it is not, or not in kopf's shape (kopf
    always writes when it last saw a peer: an entry without it is never taken as live)."""
    if not isinstance(info, Mapping) or not info.get("lastseen"):
        return None
    try:
        lifetime = min(timedelta(seconds=int(info.get("lifetime", 60))), MAX_LIFETIME)
        seen = datetime.fromisoformat(str(info["lastseen"]))
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        rank = int(info.get("priority", 0))
    except (TypeError, ValueError, OverflowError):
        return None  # not kopf's shape: ignored, as kopf would fail to read it too
    return rank if seen + lifetime > at else None


class ActiveGate:
    """`active` is set while this replica should process requests, `standby` while not."""

    def __init__(self, identity: str, priority: int, name: str, paths: Sequence[str]) -> None:
        self.identity = identity
        self.priority = priority
        self._name = name
        self._paths = list(paths)
        self._objects: dict[str, Mapping[str, Any] | None] = {}
        self.active = asyncio.Event()
        self.standby = asyncio.Event()
        self.standby.set()

    @classmethod
    def standalone(cls) -> ActiveGate:
        gate = cls("", 0, "", [])
        gate._set(True)
        return gate

    def start(self, credentials: Credentials) -> list[asyncio.Task[None]]:
        if not self._paths:
            return []
        informers = [
            Informer(credentials, path, self._replacer(path), self._applier(path))
            for path in self._paths
        ]
        tasks = [asyncio.create_task(informer.run()) for informer in informers]
        tasks.append(asyncio.create_task(self._recheck(informers)))
        return tasks

    def _replacer(self, path: str) -> Any:
        def replace(items: list[Mapping[str, Any]]) -> None:
            self._objects[path] = next(
                (o for o in items if (o.get("metadata") or {}).get("name") == self._name), None
            )

        return replace

    def _applier(self, path: str) -> Any:
        def apply(kind: str, obj: Mapping[str, Any]) -> None:
            if (obj.get("metadata") or {}).get("name") != self._name:
                return
            self._objects[path] = None if kind == "DELETED" else obj

        return apply

    async def _recheck(self, informers: list[Informer]) -> None:
        while True:
            synced = all(i.synced.is_set() for i in informers)
            at = datetime.now(UTC)
            rivals = [
                peer
                for path in self._paths
                for peer in outranked_by(self._objects.get(path), self.identity, self.priority, at)
            ]
            here = all(announced(self._objects.get(p), self.identity, at) for p in self._paths)
            if synced and rivals and self.active.is_set():
                _log.info("standing by for a peer of equal or higher priority", peers=rivals)
            if synced and not here and self.active.is_set():
                _log.warning(
                    "standing by: this replica's keep-alive is not in the peering object "
                    "(deleted, or not written yet)",
                    peering=self._name,
                )
            self._set(synced and here and not rivals)
            await asyncio.sleep(RECHECK_SECONDS)

    def _set(self, active: bool) -> None:
        if active == self.active.is_set():
            return
        if active:
            _log.info("this replica is active: processing requests", peer=self.identity)
            self.standby.clear()
            self.active.set()
        else:
            self.active.clear()
            self.standby.set()
