"""What an unauthenticated caller of the webhook port can make the operator hold: review bodies
share a byte budget, and a body must arrive in time (adapters/webhookserver.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp.web
import pytest
from aiohttp.test_utils import TestServer

from greenlight.adapters import webhookserver
from greenlight.adapters.webhookserver import ByteBudget, read_body


async def test_a_hold_waits_until_the_budget_has_room() -> None:
    budget = ByteBudget(10)
    order: list[str] = []

    async def hold(name: str, size: int, seconds: float) -> None:
        async with budget.hold(size):
            order.append(f"{name} in")
            await asyncio.sleep(seconds)
        order.append(f"{name} out")

    first = asyncio.create_task(hold("a", 6, 0.2))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(hold("b", 6, 0))
    await asyncio.gather(first, second)

    assert order == ["a in", "a out", "b in", "b out"]
    assert budget.free == 10
    async with budget.hold(50):  # more than the whole budget: waits for all of it, not forever
        assert budget.free == 0


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async def echo(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=await read_body(request))

    app = aiohttp.web.Application()
    app.router.add_post("/review", echo)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    yield test_server
    await test_server.close()


async def test_a_body_that_does_not_arrive_in_time_is_answered_408(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhookserver, "BODY_SECONDS", 0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /review HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"{" * 10
    )  # and the other 90 bytes never
    await writer.drain()

    status = await asyncio.wait_for(reader.readline(), 5)

    assert status.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_a_body_over_the_limit_is_refused_before_it_is_read(server: TestServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    declared = webhookserver.MAX_REVIEW_BYTES + 1
    writer.write(f"POST /review HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode())
    await writer.drain()

    status = await asyncio.wait_for(reader.readline(), 5)

    assert status.startswith(b"HTTP/1.1 413")
    writer.close()


async def test_a_body_sent_in_time_is_read_whole(server: TestServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url("/review"), data=b'{"a": 1}') as response,
    ):
        assert (response.status, await response.read()) == (200, b'{"a": 1}')
