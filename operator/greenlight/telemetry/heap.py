"""Keep the operator's resident memory close to what it holds.

The operator reads big objects (plans up to 256 KiB, pages of them at start-up) in worker
threads, and glibc's allocator keeps memory freed in a thread's arena for reuse instead of giving
it back: after a burst or a cold start the process held far more than its live data.
`malloc_trim(0)` (glibc's own interface; nothing happens on other C libraries) returns those
free pages to the system; the operator calls it after each list of the requests and every
`TRIM_EVERY` seconds.

Capping the number of arenas (`M_ARENA_MAX`) saved some 40 MiB more with 400 plans of 256 KiB,
but made decisions, whose audit, SubjectAccessReview and status calls run in threads at once,
measurably slower (docs/benchmarks.md): the arenas are left as glibc sizes them.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sys

TRIM_EVERY = 20.0


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def trim() -> bool:
    """Return freed heap pages to the system now; False when not glibc."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))


async def trim_forever(every: float = TRIM_EVERY) -> None:
    """`trim` every `every` seconds (a few milliseconds each), until cancelled."""
    if _libc() is None:
        return
    while True:
        await asyncio.sleep(every)
        trim()
