"""What an unauthenticated caller of the webhook port can make the operator hold: review bodies
share a byte budget, and a body must arrive in time (adapters/webhookserver.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import pytest
from aiohttp.test_utils import TestServer, make_mocked_request

from greenlight.adapters import webhookserver
from greenlight.adapters.webhookserver import ByteBudget, read_body


def test_a_review_takes_room_as_it_reads_and_is_refused_at_once_when_there_is_none() -> None:
    budget = ByteBudget(10)
    with budget.account() as first:
        first(6)
        with budget.account() as second, pytest.raises(aiohttp.web.HTTPServiceUnavailable):
            second(6)  # no waiting behind the first review
        assert budget.free == 4
        with budget.account() as third:
            third(4)
            assert budget.free == 0
    assert budget.free == 10  # all of it given back, refused or not


async def test_a_stalled_body_holds_only_what_it_sent(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhookserver, "BODY_SECONDS", 0.5)
    budget = COUNTED
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    declared = webhookserver.MAX_REVIEW_BYTES
    writer.write(
        f"POST /counted HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode()
    )
    writer.write(b"{" * 1000)
    await writer.drain()
    await asyncio.sleep(0.2)

    assert budget.total - budget.free == 1000  # not the 8 MiB it announced
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 408")
    assert budget.free == budget.total
    writer.close()


async def _never(**_: Any) -> None:
    raise AssertionError("no handler is called for what is refused before it")


def _review_request(path: str) -> Any:
    return make_mocked_request("POST", f"/{path}", match_info={"id": path})


async def test_only_the_handlers_own_paths_are_answered() -> None:
    server = webhookserver.WebhookServer()
    server.routes = {"validate": webhookserver.Route(fn=_never, mutating=False)}
    with pytest.raises(aiohttp.web.HTTPNotFound):
        await server._answer(_review_request("zzz"), b'{"request": {}}')
    with pytest.raises(aiohttp.web.HTTPServiceUnavailable):  # routes known, the gate not yet
        await server._answer(_review_request("validate"), b'{"request": {}}')


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"request": ' + b"9" * 5000 + b"}", b"\xff\xfe", b"{", b"[]"],
    ids=["deep", "huge-int", "not-utf8", "cut", "not-a-review"],
)
async def test_a_body_that_is_no_review_is_answered_400(body: bytes) -> None:
    server = webhookserver.WebhookServer()
    server.routes = {"validate": webhookserver.Route(fn=_never, mutating=False)}
    server.memo = object()
    with pytest.raises(aiohttp.web.HTTPBadRequest):
        await server._answer(_review_request("validate"), body)


COUNTED = ByteBudget(webhookserver.REVIEW_BYTES_IN_FLIGHT)  # the /counted route's


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async def echo(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=await read_body(request))

    async def counted(request: aiohttp.web.Request) -> aiohttp.web.Response:
        with COUNTED.account() as take:
            return aiohttp.web.Response(body=await read_body(request, take))

    app = aiohttp.web.Application()
    app.router.add_post("/review", echo)
    app.router.add_post("/counted", counted)
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
