"""Giving freed heap memory back (telemetry/heap.py): glibc's malloc_trim, where there is one."""

from __future__ import annotations

import asyncio
import sys

import pytest

from greenlight.telemetry import heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_glibc_is_found_and_trim_releases_freed_blocks() -> None:
    assert heap._libc() is not None, "this Linux has no glibc malloc_trim"
    blocks = [bytearray(64 * 1024) for _ in range(512)]  # served from the heap, not mmap
    del blocks
    # malloc_trim answers 1 when it gave memory back: 32 MiB was just freed on the heap.
    assert heap.trim() is True


def test_the_trim_loop_runs_until_cancelled() -> None:
    async def scenario() -> None:
        task = asyncio.create_task(heap.trim_forever(every=0.01))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
