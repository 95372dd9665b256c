"""The ApprovalRequests, as the active replica sees them: list, then watch, with backpressure.

While this replica is active (adapters/peers.py), each watched scope (the cluster, or each
watched namespace) is listed a page at a time and then watched from the list's resourceVersion.
Every object and event goes to the converger, at most `concurrency` at once: while that many
are in hand, nothing more is read (the next page waits; the watch stream waits in its
connection). Memory is bounded by a page and the objects in hand, whatever the number or size
of the requests, also on a cold start with thousands pending.

The listed objects are caught up (`Converger.listed`: remembered and their expiry armed when
nothing is due, reconciled at once when something is); watch events are reconciled
(`Converger.on_event`). A request that a list no longer shows (deleted while no watch ran) is
forgotten and its deletion put on record. An expired watch (410) or any error lists again after
a bounded backoff. When the replica stands by, the watches stop and it forgets what it knew
(`Converger.stand_by`): another replica is in charge.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog

from greenlight.adapters.converge import Converger
from greenlight.adapters.peers import ActiveGate
from greenlight.kube import Kube
from greenlight.telemetry import heap

_log = structlog.get_logger("greenlight.watch")
BACKOFF_MAX = 30.0
LISTED = "LISTED"


class RequestWatch:
    def __init__(
        self,
        kube: Kube,
        converger: Converger,
        namespaces: Sequence[str],
        gate: ActiveGate,
        *,
        page: int = 100,
        concurrency: int = 32,
    ) -> None:
        self._kube = kube
        self._converger = converger
        self._scopes: list[str | None] = list(namespaces) or [None]
        self._gate = gate
        self._page = page
        self._slots = asyncio.Semaphore(concurrency)
        self._in_hand: set[asyncio.Task[None]] = set()
        self.listed = asyncio.Event()  # set once every scope was listed and caught up

    async def run(self) -> None:
        while True:
            await self._gate.active.wait()
            scopes = [asyncio.create_task(self._scope(scope)) for scope in self._scopes]
            standby = asyncio.create_task(self._gate.standby.wait())
            try:
                await asyncio.wait([*scopes, standby], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in [*scopes, standby]:
                    task.cancel()
                for task in [*scopes, standby, *self._in_hand]:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self.listed.clear()
            self._converger.stand_by()
            _log.info("standing by: the requests are no longer watched here")

    async def _scope(self, namespace: str | None) -> None:
        backoff = 1.0
        while True:
            try:
                version = await self._list(namespace)
                backoff = 1.0
                while version:
                    version = await self._watch(namespace, version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning(
                    "listing or watching the requests failed; listing again",
                    namespace=namespace or "all",
                    error=str(exc),
                    retry_in_seconds=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _list(self, namespace: str | None) -> str:
        """Hand over every object in the scope; the list's resourceVersion."""
        seen: set[str] = set()
        version = ""
        async for items, last in self._kube.listing(namespace, limit=self._page):
            version = last or version
            for obj in items:
                seen.add(str((obj.get("metadata") or {}).get("uid", "")))
                await self._hand(LISTED, obj)
        for uid, (ns, name) in list(self._converger.ledger.where.items()):
            if uid not in seen and (namespace is None or ns == namespace):
                gone = {"metadata": {"uid": uid, "namespace": ns, "name": name}}
                await self._hand("DELETED", gone)
        await self._drained()
        heap.trim()  # the pages are gone: give their memory back now
        if not self.listed.is_set():
            _log.info("caught up", namespace=namespace or "all", armed=self._converger.clock.armed)
            self.listed.set()
        return version

    async def _watch(self, namespace: str | None, version: str) -> str:
        """Hand over events until the watch ends; the version to go on from ("" lists again)."""
        async for kind, obj in self._kube.watch(namespace, version):
            if kind == "ERROR":
                _log.info("the watch expired; listing again", status=obj.get("code"))
                return ""
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in {"ADDED", "MODIFIED", "DELETED"}:
                await self._hand(kind, obj)
        return version

    async def _hand(self, kind: str, obj: dict[str, Any]) -> None:
        """Give one object to the converger, waiting while `concurrency` are in hand."""
        await self._slots.acquire()
        task = asyncio.create_task(self._converge(kind, obj))
        self._in_hand.add(task)
        task.add_done_callback(self._in_hand.discard)

    async def _converge(self, kind: str, obj: dict[str, Any]) -> None:
        try:
            if kind == LISTED:
                await self._converger.listed(obj)
            else:
                await self._converger.on_event(kind, obj)
        except Exception:
            meta = obj.get("metadata") or {}
            _log.exception(
                "handling a request failed", namespace=meta.get("namespace"), name=meta.get("name")
            )
        finally:
            self._slots.release()

    async def _drained(self) -> None:
        while self._in_hand:
            await asyncio.wait(list(self._in_hand))
