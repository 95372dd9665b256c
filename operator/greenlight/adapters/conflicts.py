"""Concurrency on one object. Retrying a read-decide-write step that lost a race (HTTP 409),
like client-go's `retry.RetryOnConflict`: a bounded number of attempts with jittered
exponential backoff.

Every optimistic write in the operator (status updates, decision records from chat) goes through
`retry_on_conflict`, so there is one bound and one backoff to reason about; `KeyedLocks` keeps
this process to one reconcile at a time per object.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import TypeVar

from greenlight.kube import Conflict

T = TypeVar("T")
ATTEMPTS = 8
BASE_DELAY = 0.005
MAX_DELAY = 0.5


class StillConflicting(Exception):
    """Every attempt lost its race; the caller gives up for now and retries later."""


async def retry_on_conflict(
    step: Callable[[], Awaitable[T]],
    *,
    attempts: int = ATTEMPTS,
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
) -> T:
    """Run `step` until it does not raise Conflict; sleep a jittered, doubling delay between
    tries; raise StillConflicting after `attempts` conflicts."""
    for attempt in range(attempts):
        try:
            return await step()
        except Conflict:
            if attempt == attempts - 1:
                break
            delay = min(cap, base * 2**attempt)
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter only
    raise StillConflicting(f"the object kept changing ({attempts} conflicting writes)")


class KeyedLocks:
    """One asyncio lock per key, alive only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[Hashable, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[bool]:
        """Hold `key`'s lock; yields whether someone else held it when we asked."""
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        contended = lock.locked()
        async with lock:
            yield contended
