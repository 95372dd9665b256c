"""The ApprovalRequests, as the active replica sees them: list, then watch, with backpressure.

While this replica is active (adapters/peers.py), each watched scope (the cluster, or each
watched namespace) is listed a page at a time and then watched from the list's resourceVersion.
Memory is bounded whatever the number or size of the requests, also on a cold start with
thousands pending:

- a listed object is parsed and remembered, its expiry armed (`Converger.listed`), and dropped;
  only the names of those with something left to do (created or decided while no replica
  watched, past their expiry) are kept, and they are reconciled in the background, `catch_up`
  at a time, each read afresh, while the watch already runs;
- watch events go to the converger (`Converger.on_event`), at most `events` at once (kopf's
  former worker limit), an event with a large plan counting as several (PLAN_CHARS): while
  the slots are full nothing more is read, the stream waits in its connection. A notifier that
  hangs holds one of them, not the watch.
 A request that a list no longer shows (deleted while no watch ran) is
forgotten and its deletion put on record. An expired watch (410) or any error lists again after
a bounded backoff. When the replica stands by, the watches stop and it forgets what it knew
(`Converger.stand_by`): another replica is in charge.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog

from greenlight.adapters.converge import Converger
from greenlight.adapters.informer import relisting
from greenlight.adapters.peers import ActiveGate
from greenlight.kube import Kube
from greenlight.telemetry import heap

_log = structlog.get_logger("greenlight.watch")
# An event in hand holds one of the `events` slots, and one more for each PLAN_CHARS characters
# of plan it carries: what the events in hand hold is bounded in size, not only in number
# (256 requests with plans at the schema's limit would have held several hundred MiB).
PLAN_CHARS = 16 * 1024


class RequestWatch:
    def __init__(
        self,
        kube: Kube,
        converger: Converger,
        namespaces: Sequence[str],
        gate: ActiveGate,
        *,
        page: int = 100,
        catch_up: int = 32,
        events: int = 256,
    ) -> None:
        self._kube = kube
        self._converger = converger
        self._scopes: list[str | None] = list(namespaces) or [None]
        self._gate = gate
        self._page = page
        self._catch_up_slots = asyncio.Semaphore(catch_up)
        self._events = events
        self._event_slots = asyncio.Semaphore(events)
        self._taking = asyncio.Lock()  # one event at a time takes its slots
        self._tasks: set[asyncio.Task[None]] = set()
        self.listed = asyncio.Event()  # set once a list was read and caught up
        self._scopes_listed: set[str | None] = set()

    async def run(self) -> None:
        while True:
            await self._gate.active.wait()
            scopes = [asyncio.create_task(self._scope(scope)) for scope in self._scopes]
            standby = asyncio.create_task(self._gate.standby.wait())
            try:
                await asyncio.wait([*scopes, standby], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in [*scopes, standby, *self._tasks]:
                    task.cancel()
                for task in [*scopes, standby, *self._tasks]:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self.listed.clear()
            self._scopes_listed.clear()
            self._converger.stand_by()
            _log.info("standing by: the requests are no longer watched here")

    async def _scope(self, namespace: str | None) -> None:
        await relisting(
            lambda: self._list(namespace),
            lambda version: self._watch(namespace, version),
            namespace=namespace or "all",
        )

    async def _list(self, namespace: str | None) -> str:
        """Remember every object in the scope and arm its expiry; reconcile in the background
        what is left to do. Returns the list's resourceVersion."""
        seen: set[str] = set()
        todo: list[tuple[str, str]] = []
        version = ""
        async for items, last in self._kube.listing(namespace, limit=self._page):
            version = last or version
            for obj in items:
                meta = obj.get("metadata") or {}
                seen.add(str(meta.get("uid", "")))
                if self._converger.listed(obj):
                    todo.append((str(meta["namespace"]), str(meta["name"])))
                await asyncio.sleep(0)  # admission reviews are answered in between
        for uid, (ns, name) in list(self._converger.ledger.where.items()):
            if uid not in seen and (namespace is None or ns == namespace):
                gone = {"metadata": {"uid": uid, "namespace": ns, "name": name}}
                await self._event("DELETED", gone)
        heap.trim()  # the pages are gone: give their memory back now
        self._scopes_listed.add(namespace)
        if self._scopes_listed.issuperset(self._scopes):
            self._converger.ledger.listed.set()  # a uid the ledger does not know is gone
        self._spawn(self._catch_up(namespace, todo))
        return version

    async def _catch_up(self, namespace: str | None, todo: list[tuple[str, str]]) -> None:
        """Reconcile what a list left to do, `catch_up` at a time, each read afresh (the list
        keeps only their names): while the watch already runs, so decisions are not held up."""

        async def one(ns: str, name: str) -> None:
            async with self._catch_up_slots:
                try:
                    await self._converger.reconcile(ns, name)
                except Exception:
                    _log.exception("catching up a request failed", namespace=ns, name=name)

        await asyncio.gather(*(one(ns, name) for ns, name in todo))
        if not self.listed.is_set():
            _log.info(
                "caught up",
                namespace=namespace or "all",
                armed=self._converger.clock.armed,
                reconciled=len(todo),
            )
            self.listed.set()

    async def _watch(self, namespace: str | None, version: str) -> str:
        """Hand over events until the watch ends; the version to go on from ("" lists again)."""
        async for kind, obj in self._kube.watch(namespace, version):
            if kind == "ERROR":
                _log.info("the watch expired; listing again", status=obj.get("code"))
                return ""
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in {"ADDED", "MODIFIED", "DELETED"}:
                await self._event(kind, obj)
        return version

    async def _event(self, kind: str, obj: dict[str, Any]) -> None:
        """Give one event to the converger, waiting while the events in hand fill the slots."""
        weight = self._weight(obj)
        async with self._taking:  # so that no two events each wait holding part of the slots
            for _ in range(weight):
                await self._event_slots.acquire()
        self._spawn(self._converge(kind, obj, weight))

    def _weight(self, obj: dict[str, Any]) -> int:
        plan = (obj.get("spec") or {}).get("plan")
        details = plan.get("details") if isinstance(plan, dict) else None
        size = len(details) if isinstance(details, str) else 0
        return min(self._events, 1 + size // PLAN_CHARS)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _converge(self, kind: str, obj: dict[str, Any], weight: int) -> None:
        try:
            await self._converger.on_event(kind, obj)
        except Exception:
            meta = obj.get("metadata") or {}
            _log.exception(
                "handling a request failed", namespace=meta.get("namespace"), name=meta.get("name")
            )
        finally:
            for _ in range(weight):
                self._event_slots.release()
