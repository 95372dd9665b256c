"""The expiry clock (adapters/expiry.py): one timer for every key, earliest due time wins,
bounded concurrency, and a failing callback retried. Real time, short delays."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from greenlight.adapters.expiry import ExpiryClock

Fired = list[tuple[str, str, float]]


@contextlib.asynccontextmanager
async def running(clock: ExpiryClock) -> AsyncIterator[None]:
    task = asyncio.create_task(clock.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def recorder(fired: Fired) -> Callable[[str, str], Awaitable[None]]:
    async def on_due(namespace: str, name: str) -> None:
        fired.append((namespace, name, time.time()))

    return on_due


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_arming_keeps_the_earliest_due_time() -> None:
    clock = ExpiryClock(recorder([]))

    clock.arm(200.0, "ci", "a")
    clock.arm(100.0, "ci", "a")
    clock.arm(300.0, "ci", "a")
    clock.arm(50.0, "ci", "b")

    assert clock.due("ci", "a") == 100.0
    assert clock.due("ci", "b") == 50.0
    assert clock.armed == 2


async def test_forget_drops_a_key_and_leaves_the_others() -> None:
    clock = ExpiryClock(recorder([]))
    clock.arm(100.0, "ci", "a")
    clock.arm(100.0, "ci", "b")

    clock.forget("ci", "a")
    clock.forget("ci", "never-armed")

    assert clock.due("ci", "a") is None
    assert clock.due("ci", "b") == 100.0
    assert clock.armed == 1


async def test_a_retry_is_due_after_its_delay_but_never_postpones_an_earlier_alarm() -> None:
    clock = ExpiryClock(recorder([]))

    clock.retry(5.0, "ci", "a")
    due = clock.due("ci", "a")
    assert due is not None
    assert abs(due - (time.time() + 5.0)) < 0.5

    clock.arm(time.time() + 1.0, "ci", "b")
    before = clock.due("ci", "b")
    clock.retry(5.0, "ci", "b")
    assert clock.due("ci", "b") == before


async def test_an_alarm_fires_once_at_its_due_time() -> None:
    fired: Fired = []
    clock = ExpiryClock(recorder(fired))
    async with running(clock):
        at = time.time() + 0.15
        clock.arm(at, "ci", "a")
        clock.arm(at, "ci", "a")  # the same time twice fires once
        await until(lambda: bool(fired))
        await asyncio.sleep(0.1)

    assert [(ns, name) for ns, name, _ in fired] == [("ci", "a")]
    assert at - 0.01 <= fired[0][2] <= at + 0.2
    assert clock.due("ci", "a") is None


async def test_arming_an_earlier_time_wakes_a_waiting_clock() -> None:
    fired: Fired = []
    clock = ExpiryClock(recorder(fired))
    async with running(clock):
        clock.arm(time.time() + 3600, "ci", "a")
        await asyncio.sleep(0.02)  # the clock now sleeps towards the hour
        at = time.time() + 0.05
        clock.arm(at, "ci", "a")
        await until(lambda: bool(fired), within=1.0)

    assert fired[0][2] <= at + 0.2


async def test_a_forgotten_alarm_never_fires() -> None:
    fired: Fired = []
    clock = ExpiryClock(recorder(fired))
    async with running(clock):
        clock.arm(time.time() + 0.05, "ci", "gone")
        clock.arm(time.time() + 0.1, "ci", "kept")
        clock.forget("ci", "gone")
        await until(lambda: bool(fired))
        await asyncio.sleep(0.05)

    assert [name for _, name, _ in fired] == ["kept"]


async def test_a_thousand_alarms_in_one_instant_all_fire_with_bounded_concurrency() -> None:
    running_now, peak, done = 0, 0, []

    async def on_due(namespace: str, name: str) -> None:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        await asyncio.sleep(0.005)
        running_now -= 1
        done.append(name)

    clock = ExpiryClock(on_due, concurrency=32)
    at = time.time() + 0.05
    for i in range(1000):
        clock.arm(at, "ci", f"r-{i}")
    started = time.monotonic()
    async with running(clock):
        await until(lambda: len(done) == 1000, within=5.0)
    elapsed = time.monotonic() - started

    assert sorted(done) == sorted(f"r-{i}" for i in range(1000))
    assert 1 < peak <= 32
    assert elapsed < 2.0
    assert clock.armed == 0


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyError("metadata")])
async def test_a_failing_callback_is_retried_and_the_clock_keeps_running(
    error: Exception,
) -> None:
    fired: Fired = []

    async def on_due(namespace: str, name: str) -> None:
        fired.append((namespace, name, time.time()))
        if name == "bad":
            raise error

    clock = ExpiryClock(on_due)
    async with running(clock):
        clock.arm(time.time() + 0.02, "ci", "bad")
        await until(lambda: len(fired) == 1)
        await until(lambda: clock.due("ci", "bad") is not None)
        clock.arm(time.time() + 0.02, "ci", "good")
        await until(lambda: len(fired) == 2)

    due = clock.due("ci", "bad")
    assert due is not None
    assert abs(due - (time.time() + 5.0)) < 1.0
    assert [name for _, name, _ in fired] == ["bad", "good"]
