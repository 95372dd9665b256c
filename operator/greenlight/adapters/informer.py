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
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import kubernetes
import structlog

from greenlight.kube import auth_headers, ssl_context

_log = structlog.get_logger("greenlight.informer")
PAGE = 500
WATCH_SECONDS = 300
BACKOFF_MAX = 30.0
# The largest watch event accepted (one object); bigger lines end the watch and list again.
MAX_EVENT_BYTES = 4 * 1024 * 1024

Replace = Callable[[list[Mapping[str, Any]]], None]
Apply = Callable[[str, Mapping[str, Any]], None]


class Informer:
    """Keeps a caller's view of one collection (`path`, e.g. /api/v1/namespaces) current."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        path: str,
        replace: Replace,
        apply: Apply,
    ) -> None:
        self._api = api_client
        self._path = path
        self._replace = replace
        self._apply = apply
        self.synced = asyncio.Event()

    async def run(self) -> None:
        backoff = 1.0
        while True:
            try:
                async with self._session() as session:
                    version = await self._list(session)
                    self.synced.set()
                    backoff = 1.0
                    while version:
                        version = await self._watch(session, version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("list/watch failed; listing again", path=self._path, error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=self._api.configuration.host,
            headers=auth_headers(self._api),
            connector=aiohttp.TCPConnector(ssl=ssl_context(self._api)),
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
            async with session.get(self._path, params=params) as response:
                response.raise_for_status()
                page = await response.json()
            items.extend(page.get("items") or ())
            meta = page.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                self._replace(items)
                return str(meta.get("resourceVersion") or "")

    async def _watch(self, session: aiohttp.ClientSession, version: str) -> str:
        """Apply events until the watch ends; the version to go on from ("" to list again)."""
        params = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        async with session.get(self._path, params=params) as response:
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
