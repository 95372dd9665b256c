"""Keep the operator's resident memory close to what it holds.

The operator reads big objects (plans up to 256 KiB, pages of them at start-up) in worker
threads, and glibc's allocator gives each thread its own arena and keeps freed memory in it: with
32 I/O threads the process held several times its live data after a burst or a cold start. Two
allocator settings fix that, through glibc's own interface (nothing on other C libraries):

- at most `ARENAS` arenas (`mallopt(M_ARENA_MAX)`, set before the threads exist);
- `malloc_trim(0)` every `TRIM_EVERY` seconds, which returns freed pages to the system.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sys

ARENAS = 2
TRIM_EVERY = 20.0
_M_ARENA_MAX = -8  # glibc malloc.h


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas() -> bool:
    """Cap glibc's malloc arenas; call before starting threads. False when not glibc."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, ARENAS))


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
