"""At start, from one paged list per watched namespace (or one for the cluster): remember every
request and arm the expiry of every pending one, then reconcile every request with something
left to do (created or decided while the operator was down, caught by a crash before its
notification or its transition, or past its expiry).

kopf's initial listing delivers the same objects as watch events afterwards; the ledger then
knows the resourceVersions of the settled ones, so those events cost nothing. Only the keys of
the requests left to reconcile are kept, never their bodies: each is read again when its turn
comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from greenlight.adapters.converge import Converger
from greenlight.core.request import Request
from greenlight.kube import Kube
from greenlight.telemetry import heap

_log = structlog.get_logger("greenlight.catchup")


async def catch_up(
    kube: Kube,
    converger: Converger,
    namespaces: Sequence[str],
    concurrency: int = 16,
    page: int = 100,
) -> int:
    """Returns how many requests were left to reconcile. `page` objects are read at a time."""
    todo: list[tuple[str, str]] = []
    scopes: Sequence[str | None] = list(namespaces) or [None]
    for namespace in scopes:
        async for items in kube.pages(namespace, limit=page):
            for obj in items:
                try:
                    request = Request.parse(obj, converger.marks_key)
                except (KeyError, ValueError) as exc:
                    _log.warning("unreadable request skipped", error=str(exc))
                    continue
                if converger.settled(request):
                    converger.track(request)
                else:
                    todo.append((request.namespace, request.name))
    slots = asyncio.Semaphore(concurrency)

    async def handle(namespace: str, name: str) -> None:
        async with slots:
            await converger.reconcile(namespace, name)

    await asyncio.gather(*(handle(*key) for key in todo))
    heap.trim()  # the pages are gone: give their memory back now
    return len(todo)
