"""Bounded HTTP bodies: what a peer sends is read up to a limit, never more."""

from __future__ import annotations

import aiohttp


class TooLarge(Exception):
    """The body is longer than the limit."""


async def read_bounded(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or TooLarge as soon as more than `limit` bytes arrived."""
    chunks, size = [], 0
    while chunk := await content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
