"""The chat paths' decision service (adapters/decisions.py) against the fake API server, and the
bounded, aggregating log of refused attempts (adapters/refusals.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.fakekube import FakeKube, create_request
from tests.support.marks import KEY

from greenlight.adapters import decisions
from greenlight.adapters.auditlog import AuditLog
from greenlight.adapters.decisions import DecisionRefused, DecisionService
from greenlight.adapters.ledger import Ledger
from greenlight.adapters.refusals import MAX_TEXT, OVERFLOW, RefusalLog
from greenlight.core.model import Action, Identity, Via
from greenlight.core.request import Request
from greenlight.core.stamps import record_key

NS = "ci"
NAME = "destroy-prod"
BOB = Identity("bob", ("approvers",))


def records(audit: AuditLog) -> list[dict[str, Any]]:
    if not audit.path.exists():
        return []
    return [json.loads(line) for line in audit.path.read_text(encoding="utf-8").splitlines()]


@dataclass
class Desk:
    kube: FakeKube
    audit: AuditLog
    refusals: RefusalLog
    ledger: Ledger
    service: DecisionService


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    kube = FakeKube()
    audit = AuditLog(tmp_path / "audit.log", key=b"k" * 32)
    refusals = RefusalLog(audit)
    ledger = Ledger()
    ledger.listed.set()  # the requests were listed
    yield Desk(kube, audit, refusals, ledger, DecisionService(kube, refusals, ledger, KEY))
    await refusals.close()
    audit.close()


async def test_an_allowed_approval_writes_a_record_the_operator_accepts(desk: Desk) -> None:
    uid = create_request(desk.kube, NS, NAME)["metadata"]["uid"]
    desk.kube.allow("bob", "approve", NS)

    view = await desk.service.submit_decision(NS, NAME, BOB, Action.APPROVE, "", Via.SLACK)

    assert view.uid == uid
    stored = desk.kube.stored(NS, NAME)
    assert record_key("bob") in stored["metadata"]["annotations"]
    request = Request.parse(stored, KEY)
    assert request.marks.untrusted == ()
    (record,) = request.marks.records
    assert (record.user, record.action, record.via) == ("bob", Action.APPROVE, Via.SLACK)
    assert record.groups == ("approvers",)
    assert record.valid(KEY, uid)
    assert records(desk.audit) == []  # "allowed" is audited once the operator sees it persisted


async def test_a_click_for_a_request_since_created_again_under_its_name_is_refused(
    desk: Desk,
) -> None:
    clicked = create_request(desk.kube, NS, NAME)["metadata"]["uid"]
    desk.kube.allow("bob", "approve", NS)
    # Deleted and created again (another plan) between the click's lookup and its write.
    desk.kube.delete(NS, NAME)
    created = create_request(desk.kube, NS, NAME)["metadata"]["uid"]
    assert created != clicked

    with pytest.raises(DecisionRefused) as refused:
        await desk.service.submit_decision(
            NS, NAME, BOB, Action.APPROVE, "", Via.SLACK, uid=clicked
        )

    assert refused.value.reason == "not_found"
    assert "created again" in refused.value.message
    assert record_key("bob") not in desk.kube.stored(NS, NAME)["metadata"].get("annotations", {})
    assert "patch_annotations" not in desk.kube.calls


async def test_a_record_is_written_with_the_version_it_was_authorized_against(
    desk: Desk,
) -> None:
    create_request(desk.kube, NS, NAME)
    desk.kube.allow("bob", "approve", NS)
    desk.kube.intercept("patch_annotations", lambda: desk.kube.touch(NS, NAME))

    await desk.service.submit_decision(NS, NAME, BOB, Action.APPROVE, "", Via.SLACK)

    assert desk.kube.calls.count("get") == 2  # authorized again on the fresh object
    assert desk.kube.calls.count("allowed") == 2
    assert len(Request.parse(desk.kube.stored(NS, NAME), KEY).marks.records) == 1


async def test_an_attempt_rbac_refuses_is_refused_and_audited_once(desk: Desk) -> None:
    create_request(desk.kube, NS, NAME)
    desk.kube.allow("bob", "approve", NS, allowed=False)
    version = desk.kube.stored(NS, NAME)["metadata"]["resourceVersion"]

    with pytest.raises(DecisionRefused) as refused:
        await desk.service.submit_decision(NS, NAME, BOB, Action.APPROVE, "", Via.SLACK)

    assert refused.value.reason == "not_authorized"
    assert "RBAC" in refused.value.message
    assert "patch_annotations" not in desk.kube.calls
    assert desk.kube.stored(NS, NAME)["metadata"]["resourceVersion"] == version
    (record,) = records(desk.audit)
    assert (record["event"], record["outcome"], record["reason"]) == (
        "decision_attempted",
        "refused",
        "not_authorized",
    )
    assert record["actor"] == "bob"
    assert record["request"]["name"] == NAME
    assert "spec" not in record["request"]
    assert record["details"]["via"] == "slack"


async def test_a_second_approval_by_the_same_person_replaces_their_record(desk: Desk) -> None:
    uid = create_request(desk.kube, NS, NAME, policy={"requiredApprovals": 2})["metadata"]["uid"]
    desk.kube.allow("bob", "approve", NS)
    await desk.service.submit_decision(NS, NAME, BOB, Action.APPROVE, "", Via.SLACK)
    await desk.kube.patch_status(
        NS,
        NAME,
        {
            "phase": "Pending",
            "requestedBy": "alice",
            "approvals": [{"user": "bob", "at": "2026-01-01T00:00:00Z", "via": "slack"}],
        },
        desk.kube.stored(NS, NAME)["metadata"]["resourceVersion"],
    )

    view = await desk.service.submit_decision(NS, NAME, BOB, Action.APPROVE, "", Via.SLACK)

    assert view.uid == uid
    assert view.approvals == ("bob",)
    request = Request.parse(desk.kube.stored(NS, NAME), KEY)
    assert [r.user for r in request.marks.records] == ["bob"]
    assert records(desk.audit) == []


async def test_an_unverified_request_is_refused_without_asking_rbac(desk: Desk) -> None:
    create_request(desk.kube, NS, NAME, requester=None)
    desk.kube.allow("bob", "approve", NS)

    with pytest.raises(DecisionRefused) as refused:
        await desk.service.submit_decision(NS, NAME, BOB, Action.APPROVE, "", Via.SLACK)

    assert refused.value.reason == "unverified_request"
    assert "allowed" not in desk.kube.calls
    assert "patch_annotations" not in desk.kube.calls
    assert [r["reason"] for r in records(desk.audit)] == ["unverified_request"]


async def test_find_request_by_uid_uses_the_ledger_and_lists_nothing(desk: Desk) -> None:
    body = create_request(desk.kube, NS, NAME)
    uid = body["metadata"]["uid"]

    assert await desk.service.find_request_by_uid("uid-unknown") is None
    assert desk.kube.calls == []

    desk.ledger.saw(Request.parse(body, KEY))
    found = await desk.service.find_request_by_uid(uid)
    assert found is not None
    assert (found.namespace, found.name, found.uid) == (NS, NAME, uid)
    assert "pages" not in desk.kube.calls


async def test_a_click_before_the_first_list_waits_for_it(desk: Desk) -> None:
    body = create_request(desk.kube, NS, NAME)
    desk.ledger.listed.clear()  # just started: nothing listed yet

    lookup = asyncio.create_task(desk.service.find_request_by_uid(body["metadata"]["uid"]))
    await asyncio.sleep(0.05)
    assert not lookup.done()
    desk.ledger.place(Request.parse(body, KEY))  # the list found it, with work left to do
    desk.ledger.listed.set()

    found = await lookup
    assert found is not None
    assert found.uid == body["metadata"]["uid"]


async def test_a_click_on_an_unknown_uid_before_any_list_is_refused_after_the_wait(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk.ledger.listed.clear()
    monkeypatch.setattr(decisions, "LISTED_WAIT", 0.05)

    assert await desk.service.find_request_by_uid("uid-unknown") is None


async def test_find_request_by_uid_does_not_return_a_recreated_namesake(desk: Desk) -> None:
    old = create_request(desk.kube, NS, NAME, uid="uid-old")
    desk.ledger.saw(Request.parse(old, KEY))
    desk.kube.delete(NS, NAME)
    create_request(desk.kube, NS, NAME, uid="uid-new")

    assert await desk.service.find_request_by_uid("uid-old") is None


async def test_a_decision_on_a_vanished_request_finds_nothing(desk: Desk) -> None:
    old = create_request(desk.kube, NS, NAME)
    desk.ledger.saw(Request.parse(old, KEY))
    desk.kube.delete(NS, NAME)

    assert await desk.service.find_request_by_uid(old["metadata"]["uid"]) is None


async def refuse(log: RefusalLog, actor: str, *, uid: str = "uid-1", message: str = "no") -> None:
    await log.refuse(
        actor,
        "not_authorized",
        request={"namespace": NS, "name": NAME, "uid": uid},
        details={"message": message, "via": "slack"},
    )


async def test_a_flood_of_refusals_becomes_one_record_and_one_count(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log")
    log = RefusalLog(audit, window=60.0)

    for _ in range(1000):
        await refuse(log, "mallory")
    assert len(records(audit)) == 1
    await log.flush(float("inf"))
    await log.close()

    first, aggregate = records(audit)
    assert first["actor"] == aggregate["actor"] == "mallory"
    assert "count" not in first["details"]
    assert aggregate["details"]["count"] == 999
    assert aggregate["details"]["aggregated"] is True


async def test_refusals_counted_in_a_closed_window_are_written_before_a_new_one_opens(
    tmp_path: Path,
) -> None:
    audit = AuditLog(tmp_path / "audit.log")
    log = RefusalLog(audit, window=0.05)
    for _ in range(3):
        await refuse(log, "mallory")
    # The window closes while the event loop is busy, before its flusher gets to run.
    time.sleep(0.06)  # noqa: ASYNC251 - blocking the loop on purpose

    await refuse(log, "mallory")
    await log.close()

    counts = [r["details"].get("count", 1) for r in records(audit)]
    assert sum(counts) == 4
    assert counts == [1, 2, 1]


async def test_refusal_records_cut_long_names_and_messages(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log")
    log = RefusalLog(audit)

    await refuse(log, "m" * 100_000, message="x" * 1_000_000, uid="u" * 10_000)
    await log.close()

    (record,) = records(audit)
    assert len(record["actor"]) <= 257
    assert len(record["details"]["message"]) <= MAX_TEXT + 1
    assert len(record["request"]["uid"]) <= MAX_TEXT + 1
    assert len(audit.path.read_bytes()) < 4096


async def test_past_max_keys_refusals_share_the_overflow_key(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log")
    log = RefusalLog(audit, max_keys=4)

    for i in range(10):
        await refuse(log, f"user-{i}", uid=f"uid-{i}")
    await log.flush(float("inf"))
    await log.close()

    written = records(audit)
    assert [r["actor"] for r in written[:4]] == ["user-0", "user-1", "user-2", "user-3"]
    overflow = [r for r in written if r["actor"] == OVERFLOW[0]]
    assert [r["details"].get("count", 1) for r in overflow] == [1, 5]
    assert len(written) == 6
