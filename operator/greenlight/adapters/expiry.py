"""One timer for every request that must be looked at again at a known time: its expiry, or a
retry after a transient failure.

The clock knows nothing about requests: it keeps (namespace, name) -> due time and calls
`on_due(namespace, name)` when that time comes, a bounded number at once. Arming is idempotent
(the earliest due time wins; arming the same time twice fires once), and `forget` drops a key
(a request that is no longer pending, or deleted), so a restart simply re-arms everything.
It holds no object bodies: what is due is read afresh when it fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

_log = structlog.get_logger("greenlight.expiry")
Key = tuple[str, str]
OnDue = Callable[[str, str], Awaitable[None]]
IDLE_WAKE = 3600.0


@dataclass(order=True)
class _Alarm:
    at: float
    key: Key = field(compare=False)


class ExpiryClock:
    def __init__(self, on_due: OnDue, concurrency: int = 32) -> None:
        self._on_due = on_due
        self._heap: list[_Alarm] = []
        self._armed: dict[Key, float] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def arm(self, at: float, namespace: str, name: str) -> None:
        """Wake `(namespace, name)` at `at` (epoch seconds), unless it is due earlier already."""
        key = (namespace, name)
        current = self._armed.get(key)
        if current is not None and current <= at:
            return
        self._armed[key] = at
        heapq.heappush(self._heap, _Alarm(at, key))
        self._wake.set()

    def retry(self, delay: float, namespace: str, name: str) -> None:
        self.arm(time.time() + delay, namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        """Nothing is due for this key any more (its stale heap entry is skipped when popped)."""
        self._armed.pop((namespace, name), None)

    def clear(self) -> None:
        """Nothing is due any more (this replica stands by)."""
        self._armed.clear()
        self._heap.clear()

    def due(self, namespace: str, name: str) -> float | None:
        return self._armed.get((namespace, name))

    @property
    def armed(self) -> int:
        return len(self._armed)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            delay = self._heap[0].at - time.time() if self._heap else IDLE_WAKE
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue
            alarm = heapq.heappop(self._heap)
            if self._armed.get(alarm.key) != alarm.at:
                continue  # re-armed for another time, or forgotten
            del self._armed[alarm.key]
            await self._slots.acquire()
            task = asyncio.create_task(self._fire(alarm.key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fire(self, key: Key) -> None:
        try:
            await self._on_due(*key)
        except Exception:
            _log.exception("a due request failed; retrying in 5 s", namespace=key[0], name=key[1])
            self.retry(5.0, *key)
        finally:
            self._slots.release()
