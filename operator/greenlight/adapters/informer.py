"""A list-then-watch loop over one kind of object, independent of kopf.

The policies and namespace labels that admission reads must be current on every replica that
serves webhooks, also on a standby whose kopf watches are paused by peering: so they are kept by
this small informer, not by kopf handlers. It lists (paged), hands the whole set over at once,
then watches from the list's resourceVersion; an expired watch (410) or any error lists again
after a bounded backoff. `synced` is set after the first complete list: until then the caller
knows it has nothing to go on (and admission fails closed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import structlog

from greenlight.kube import Credentials

_log = structlog.get_logger("greenlight.informer")
PAGE = 500
WATCH_SECONDS = 300
BACKOFF_MAX = 30.0
# The largest watch event accepted (one object); bigger lines end the watch and list again.
MAX_EVENT_BYTES = 4 * 1024 * 1024

Replace = Callable[[list[Mapping[str, Any]]], None]
Apply = Callable[[str, Mapping[str, Any]], None]


async def relisting(
    list_once: Callable[[], Awaitable[str]],
    watch_from: Callable[[str], Awaitable[str]],
    **about: str,
) -> None:
    """List, then watch from the list's resourceVersion for as long as each watch hands on a
    version to go on from; when one does not (an expired watch: 410) list again at once, and
    after any error list again after a backoff that doubles up to BACKOFF_MAX. `about` names
    the collection in the log. Runs until cancelled."""
    backoff = 1.0
    while True:
        try:
            version = await list_once()
            backoff = 1.0
            while version:
                version = await watch_from(version)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.warning(
                "listing or watching failed; listing again",
                error=str(exc),
                retry_in_seconds=backoff,
                **about,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)


class Informer:
    """Keeps a caller's view of one collection (`path`, e.g. /api/v1/namespaces) current."""

    def __init__(
        self,
        credentials: Credentials,
        path: str,
        replace: Replace,
        apply: Apply,
    ) -> None:
        self._credentials = credentials
        self._path = path
        self._replace = replace
        self._apply = apply
        self.synced = asyncio.Event()

    async def run(self) -> None:
        async with self._session() as session:
            await relisting(
                lambda: self._list(session),
                lambda version: self._watch(session, version),
                path=self._path,
            )

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=self._credentials.server,
            connector=aiohttp.TCPConnector(ssl=self._credentials.ssl_context()),
            read_bufsize=MAX_EVENT_BYTES,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=10, sock_read=WATCH_SECONDS + 30
            ),
        )

    async def _list(self, session: aiohttp.ClientSession) -> str:
        items: list[Mapping[str, Any]] = []
        token = ""
        while True:
            params = {"limit": str(PAGE)} | ({"continue": token} if token else {})
            headers = self._credentials.headers()  # a pod's token file rotates
            async with session.get(self._path, params=params, headers=headers) as response:
                response.raise_for_status()
                page = await response.json()
            items.extend(page.get("items") or ())
            meta = page.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                self._replace(items)
                self.synced.set()
                return str(meta.get("resourceVersion") or "")

    async def _watch(self, session: aiohttp.ClientSession, version: str) -> str:
        """Apply events until the watch ends; the version to go on from ("" to list again)."""
        params = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        headers = self._credentials.headers()
        async with session.get(self._path, params=params, headers=headers) as response:
            response.raise_for_status()
            async for line in response.content:
                event = json.loads(line)
                kind, obj = str(event.get("type")), event.get("object") or {}
                if kind == "ERROR":
                    return ""  # usually 410 Gone: the version is too old
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind != "BOOKMARK":
                    self._apply(kind, obj)
        return version
