"""The request watch in-process (adapters/watch.py, peers.py): list then watch against a fake
API server (tests/support/fakekube.py), the real converger and audit log, and the rule that
decides which replica is active."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.support.fakekube import FakeKube, create_request
from tests.support.marks import KEY
from tests.unit.test_converge import NS, RecordingNotifier, approval

from greenlight.adapters import peers as peers_module
from greenlight.adapters import watch as watch_module
from greenlight.adapters.announce import Announcer
from greenlight.adapters.auditlog import AuditLog
from greenlight.adapters.converge import Converger
from greenlight.adapters.peers import ActiveGate, announced, outranked_by
from greenlight.adapters.watch import RequestWatch
from greenlight.core.model import Phase
from greenlight.core.request import Request


@dataclass
class Bed:
    kube: FakeKube
    audit: AuditLog
    notifier: RecordingNotifier
    converger: Converger
    gate: ActiveGate
    watch: RequestWatch

    def phase(self, name: str) -> Phase | None:
        return Request.parse(self.kube.stored(NS, name), KEY).status.phase

    def records(self, event: str) -> list[dict[str, Any]]:
        if not self.audit.path.exists():
            return []
        lines = self.audit.path.read_text(encoding="utf-8").splitlines()
        return [r for r in map(json.loads, lines) if r["event"] == event]


async def until(check: Callable[[], object], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    kube = FakeKube(page_size=3)
    audit = AuditLog(tmp_path / "audit.log", key=b"k" * 32)
    notifier = RecordingNotifier()
    converger = Converger(kube, audit, Announcer(kube, audit, [notifier], KEY), KEY)
    gate = ActiveGate("me", 1, "peering", ["/peerings"])
    watch = RequestWatch(kube, converger, [], gate, page=3, catch_up=2, events=2)
    task = asyncio.create_task(watch.run())
    yield Bed(kube, audit, notifier, converger, gate, watch)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    audit.close()


async def test_nothing_is_read_while_the_replica_stands_by(bed: Bed) -> None:
    create_request(bed.kube, NS, "a")
    await asyncio.sleep(0.1)
    assert "listing" not in bed.kube.calls
    assert bed.phase("a") is None


async def test_the_list_catches_up_then_the_watch_sees_new_requests(bed: Bed) -> None:
    names = [f"r{i}" for i in range(7)]  # three pages of three
    for name in names:
        create_request(bed.kube, NS, name)
    bed.gate._set(True)
    await until(lambda: bed.watch.listed.is_set())
    assert all(bed.phase(n) is Phase.PENDING for n in names)
    create_request(bed.kube, NS, "later")
    await until(lambda: bed.phase("later") is Phase.PENDING)
    assert len(bed.notifier.announced) == len(names) + 1
    assert bed.converger.clock.armed == len(names) + 1


async def test_a_listed_request_is_located_before_it_is_caught_up(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    uids = [create_request(bed.kube, NS, f"r{i}")["metadata"]["uid"] for i in range(4)]
    held = asyncio.Event()

    async def held_back(*_: Any, **__: Any) -> None:
        await held.wait()

    monkeypatch.setattr(bed.converger, "reconcile", held_back)
    bed.gate._set(True)
    await until(lambda: bed.converger.ledger.listed.is_set())

    assert not bed.watch.listed.is_set(), "nothing caught up yet"
    assert [bed.converger.ledger.locate(uid) for uid in uids] == [(NS, f"r{i}") for i in range(4)]
    held.set()
    await until(lambda: bed.watch.listed.is_set())
    bed.gate._set(False)
    await until(lambda: not bed.converger.ledger.listed.is_set())


async def test_a_request_deleted_while_no_watch_ran_is_forgotten_and_recorded(bed: Bed) -> None:
    create_request(bed.kube, NS, "kept")
    create_request(bed.kube, NS, "gone")
    bed.gate._set(True)
    await until(lambda: bed.converger.ledger.pending == 2)
    bed.kube.objects.pop((NS, "gone"))  # deleted, and its event compacted away
    bed.kube.expire_watches()
    await until(lambda: bed.converger.ledger.pending == 1)
    assert bed.converger.clock.due(NS, "gone") is None
    assert [r["request"]["name"] for r in bed.records("deleted")] == ["gone"]


async def test_standing_by_forgets_every_request_and_alarm(bed: Bed) -> None:
    create_request(bed.kube, NS, "a")
    bed.gate._set(True)
    await until(lambda: bed.converger.ledger.pending == 1)
    bed.gate._set(False)
    await until(lambda: bed.converger.ledger.pending == 0)
    assert bed.converger.clock.armed == 0
    calls = len(bed.kube.calls)
    create_request(bed.kube, NS, "b")
    await asyncio.sleep(0.2)
    assert bed.phase("b") is None
    assert len(bed.kube.calls) == calls


@dataclass
class Held:
    gate: asyncio.Event
    running: int = 0
    most: int = 0


def hold_events(bed: Bed) -> Held:
    """Every event waits for `held.gate`; `held` counts how many are in hand at once."""
    held = Held(asyncio.Event())
    original = bed.converger.on_event

    async def slow(kind: str | None, body: Any) -> None:
        held.running += 1
        held.most = max(held.most, held.running)
        await held.gate.wait()
        await original(kind, body)
        held.running -= 1

    bed.converger.on_event = slow  # type: ignore[method-assign]
    return held


async def test_a_burst_is_handled_a_few_at_a_time(bed: Bed) -> None:
    bed.gate._set(True)
    await until(lambda: bed.watch.listed.is_set())
    held = hold_events(bed)
    for i in range(10):
        create_request(bed.kube, NS, f"b{i}")
    await asyncio.sleep(0.2)
    assert held.running == 2  # the rest wait, unread
    held.gate.set()
    await until(lambda: all(bed.phase(f"b{i}") is Phase.PENDING for i in range(10)))
    assert held.most <= 2


async def test_an_event_with_a_large_plan_holds_more_of_the_slots(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events in hand are bounded in size too: with 2 slots and a plan of two PLAN_CHARS, one
    event at a time is handled."""
    monkeypatch.setattr(watch_module, "PLAN_CHARS", 1000)
    bed.gate._set(True)
    await until(lambda: bed.watch.listed.is_set())
    held = hold_events(bed)
    big = {"summary": "big", "details": "x" * 2500}  # weight 3: all (2) of the slots
    for i in range(4):
        create_request(bed.kube, NS, f"big{i}", plan=big)
    await asyncio.sleep(0.2)
    assert held.running == 1
    held.gate.set()
    await until(lambda: all(bed.phase(f"big{i}") is Phase.PENDING for i in range(4)))
    assert held.most == 1
    assert bed.watch._event_slots._value == 2  # every slot given back


async def test_a_catch_up_held_up_by_its_notifier_does_not_hold_up_decisions(bed: Bed) -> None:
    uid = create_request(bed.kube, NS, "decided")["metadata"]["uid"]
    bed.gate._set(True)
    await until(lambda: bed.watch.listed.is_set())
    bed.gate._set(False)
    await until(lambda: bed.converger.ledger.pending == 0)
    for i in range(4):  # created while no replica watched: announced by the catch-up
        create_request(bed.kube, NS, f"new{i}")
    hang = asyncio.Event()
    notify = bed.notifier.notify

    async def hanging(request: Any, channel: str | None = None, *, fresh: bool = False) -> Any:
        await hang.wait()  # a notifier that does not answer
        return await notify(request, channel, fresh=fresh)

    bed.notifier.notify = hanging  # type: ignore[method-assign]
    bed.gate._set(True)
    await until(lambda: bed.converger.ledger.pending == 1)  # "decided" is listed again
    bed.kube.touch(NS, "decided", **approval("bob", uid))
    await until(lambda: bed.phase("decided") is Phase.APPROVED)
    assert all(bed.phase(f"new{i}") is None for i in range(4))
    hang.set()
    await until(lambda: all(bed.phase(f"new{i}") is Phase.PENDING for i in range(4)))


def peering(**peers: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "peering"}, "status": peers}


# The moment the peers below were last seen relative to (parameters are built at collection).
NOW = datetime.now(UTC)


def seen(ago: float = 0, priority: int = 0, lifetime: int = 15) -> dict[str, Any]:
    at = NOW - timedelta(seconds=ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": at.isoformat()}


@pytest.mark.parametrize(
    ("peers", "rivals"),
    [
        ({}, []),
        ({"me": seen(priority=1)}, []),
        ({"me": seen(priority=1), "other": seen(priority=0)}, []),
        ({"me": seen(priority=1), "other": seen(priority=2)}, ["other"]),
        ({"me": seen(priority=1), "twin": seen(priority=1)}, ["twin"]),
        ({"me": seen(priority=1), "dead": seen(ago=20, priority=5)}, []),
        ({"me": seen(priority=1), "odd": {"priority": "high", "lastseen": "x"}}, []),
        ({"me": seen(priority=1), "ageless": {"priority": 9, "lifetime": 60}}, []),
        ({"me": seen(priority=1), "huge": seen(ago=7200, priority=9, lifetime=10**14)}, []),
    ],
)
def test_a_replica_stands_by_for_live_peers_of_equal_or_higher_priority(
    peers: dict[str, Any], rivals: list[str]
) -> None:
    assert outranked_by(peering(**peers), "me", 1, NOW) == rivals


async def test_the_gate_follows_the_peering_object_and_fails_closed_until_listed() -> None:
    gate = ActiveGate("me", 0, "peering", ["/p"])
    assert not gate.active.is_set()
    assert gate.standby.is_set()
    gate._replacer("/p")([peering(me=seen(), boss=seen(priority=3, lifetime=1))])
    assert outranked_by(gate._objects["/p"], "me", 0, NOW) == ["boss"]
    later = NOW + timedelta(seconds=2)
    assert outranked_by(gate._objects["/p"], "me", 0, later) == []
    assert ActiveGate.standalone().active.is_set()


def test_a_replica_is_announced_only_by_its_own_live_keep_alive() -> None:
    assert announced(peering(me=seen()), "me", NOW)
    assert not announced(peering(me=seen(ago=20)), "me", NOW)  # its keep-alive lapsed
    assert not announced(peering(other=seen()), "me", NOW)  # not written yet
    assert not announced(None, "me", NOW)  # the peering object was deleted


async def test_without_its_keep_alive_in_the_peering_object_a_replica_stands_by(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deleted peering object, or a replica kopf has not announced yet, must not make every
    replica active at once."""
    monkeypatch.setattr(peers_module, "RECHECK_SECONDS", 0.01)
    gate = ActiveGate("me", 0, "peering", ["/p"])
    informer = SimpleNamespace(synced=asyncio.Event())
    informer.synced.set()
    recheck = asyncio.create_task(gate._recheck([informer]))  # type: ignore[list-item]
    try:
        gate._replacer("/p")([])  # listed: no peering object
        await asyncio.sleep(0.05)
        assert not gate.active.is_set()
        fresh = {"priority": 0, "lifetime": 15, "lastseen": datetime.now(UTC).isoformat()}
        gate._applier("/p")("ADDED", peering(me=fresh))
        await until(gate.active.is_set)
        gate._applier("/p")("DELETED", peering(me=fresh))
        await until(gate.standby.is_set)
    finally:
        recheck.cancel()
