"""Claiming an approval receipt once and reporting how the command ended: the pure rules
(`receipts.claim`, `receipts.finish`), the signed execution record, and `status.execution` with
its `claimed` and `finished` audit records (core/lifecycle.py)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.support.marks import KEY, approved

from greenlight.core import lifecycle, receipts
from greenlight.core.dsse import Signer
from greenlight.core.model import ANN_EXECUTION, Phase
from greenlight.core.request import Request
from greenlight.core.stamps import ExecutionRecord, plan_digest

CREATED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
DECIDED = CREATED + timedelta(minutes=1)
PLAN = "- aws:s3:Bucket logs\n"
REQUESTER = "system:serviceaccount:ci:orchestrator"
UID = "uid-1"


@pytest.fixture
def body() -> dict[str, Any]:
    return approved(Signer(Ed25519PrivateKey.generate()), REQUESTER)


def with_record(body: dict[str, Any], record: ExecutionRecord, uid: str = UID) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["metadata"]["annotations"][ANN_EXECUTION] = record.signed(KEY, uid).to_annotation()
    return out


def receipt_digest(body: dict[str, Any]) -> str:
    receipt = Request.parse(body, KEY).status.receipt
    assert receipt is not None
    return receipt.digest


DIGEST = plan_digest(PLAN)
SOON = DECIDED + timedelta(minutes=2)


# -- claiming ---------------------------------------------------------------------------------


def test_the_requester_claims_an_approved_receipt_for_the_approved_plan(
    body: dict[str, Any],
) -> None:
    outcome = receipts.claim(Request.parse(body, KEY), REQUESTER, DIGEST, SOON)

    assert isinstance(outcome, ExecutionRecord)
    assert (outcome.user, outcome.claimed_at) == (REQUESTER, SOON)
    assert outcome.receipt == receipt_digest(body)
    assert not outcome.finished


def test_a_pending_request_has_nothing_to_claim(body: dict[str, Any]) -> None:
    pending = copy.deepcopy(body)
    del pending["status"]
    outcome = receipts.claim(Request.parse(pending, KEY), REQUESTER, DIGEST, SOON)

    assert isinstance(outcome, receipts.ClaimRefusal)
    assert outcome.code == receipts.NO_RECEIPT
    assert "not handled yet" in outcome.message


@pytest.mark.parametrize("user", ["alice", "system:serviceaccount:ci:other", REQUESTER + " "])
def test_only_the_requester_identity_claims(body: dict[str, Any], user: str) -> None:
    outcome = receipts.claim(Request.parse(body, KEY), user, DIGEST, SOON)

    assert isinstance(outcome, receipts.ClaimRefusal)
    assert outcome.code == receipts.NOT_REQUESTER
    assert REQUESTER in outcome.message


def test_a_claim_at_or_after_not_after_is_refused(body: dict[str, Any]) -> None:
    deadline = DECIDED + timedelta(minutes=15)  # the default validFor
    request = Request.parse(body, KEY)

    late = receipts.claim(request, REQUESTER, DIGEST, deadline)
    just_in_time = receipts.claim(request, REQUESTER, DIGEST, deadline - timedelta(seconds=1))

    assert isinstance(late, receipts.ClaimRefusal)
    assert late.code == receipts.CLAIM_EXPIRED
    assert "2026-03-01T12:16:00Z" in late.message
    assert isinstance(just_in_time, ExecutionRecord)


def test_a_claim_for_another_plan_is_refused(body: dict[str, Any]) -> None:
    outcome = receipts.claim(Request.parse(body, KEY), REQUESTER, plan_digest(PLAN + " "), SOON)

    assert isinstance(outcome, receipts.ClaimRefusal)
    assert outcome.code == receipts.CLAIM_PLAN_MISMATCH


def test_a_second_claim_names_who_claimed_and_when(body: dict[str, Any]) -> None:
    first = ExecutionRecord(REQUESTER, SOON, receipt_digest(body))
    outcome = receipts.claim(Request.parse(with_record(body, first), KEY), REQUESTER, DIGEST, SOON)

    assert isinstance(outcome, receipts.ClaimRefusal)
    assert outcome.code == receipts.ALREADY_CLAIMED
    assert f"already claimed by {REQUESTER} at 2026-03-01T12:03:00Z" in outcome.message


def test_a_planted_execution_record_blocks_every_claim(body: dict[str, Any]) -> None:
    planted = copy.deepcopy(body)
    forged = ExecutionRecord(REQUESTER, SOON, receipt_digest(body)).signed(b"x" * 32, UID)
    planted["metadata"]["annotations"][ANN_EXECUTION] = forged.to_annotation()
    request = Request.parse(planted, KEY)

    outcome = receipts.claim(request, REQUESTER, DIGEST, SOON)

    assert request.marks.execution is None
    assert isinstance(outcome, receipts.ClaimRefusal)
    assert outcome.code == receipts.UNTRUSTED_EXECUTION


def test_an_execution_record_is_bound_to_its_object(body: dict[str, Any]) -> None:
    record = ExecutionRecord(REQUESTER, SOON, receipt_digest(body))
    copied = with_record(body, record, uid="another-uid")

    assert Request.parse(copied, KEY).marks.execution is None
    assert ANN_EXECUTION in Request.parse(copied, KEY).marks.untrusted
    assert Request.parse(with_record(body, record), KEY).marks.execution == record


# -- finishing --------------------------------------------------------------------------------


def test_the_claimer_reports_the_finish_once(body: dict[str, Any]) -> None:
    claimed = with_record(body, ExecutionRecord(REQUESTER, SOON, receipt_digest(body)))
    at = SOON + timedelta(seconds=42)

    outcome = receipts.finish(Request.parse(claimed, KEY), REQUESTER, 3, at)

    assert isinstance(outcome, ExecutionRecord)
    assert (outcome.finished_at, outcome.exit_code, outcome.claimed_at) == (at, 3, SOON)
    again = receipts.finish(Request.parse(with_record(body, outcome), KEY), REQUESTER, 0, at)
    assert isinstance(again, receipts.ClaimRefusal)
    assert again.code == receipts.ALREADY_FINISHED
    assert "exit code 3" in again.message


def test_nobody_else_reports_the_finish(body: dict[str, Any]) -> None:
    claimed = with_record(body, ExecutionRecord(REQUESTER, SOON, receipt_digest(body)))

    other = receipts.finish(Request.parse(claimed, KEY), "alice", 0, SOON)
    unclaimed = receipts.finish(Request.parse(body, KEY), REQUESTER, 0, SOON)

    assert isinstance(other, receipts.ClaimRefusal)
    assert other.code == receipts.NOT_CLAIMER
    assert isinstance(unclaimed, receipts.ClaimRefusal)
    assert unclaimed.code == receipts.NOT_CLAIMED


@pytest.mark.parametrize(
    ("text", "code"), [("0", 0), (" 7 ", 7), ("255", 255), ("unknown", "unknown")]
)
def test_exit_codes_are_0_to_255_or_unknown(text: str, code: int | str) -> None:
    assert receipts.parse_exit_code(text) == code


@pytest.mark.parametrize("text", ["-1", "256", "1.5", "", "ok", "0x1", "٣"])
def test_other_exit_codes_are_refused_by_value(text: str) -> None:
    with pytest.raises(ValueError, match="an exit code from 0 to 255"):
        receipts.parse_exit_code(text)


def test_a_malformed_exit_code_in_a_record_is_not_read() -> None:
    with pytest.raises(ValueError, match="exitCode"):
        ExecutionRecord.from_annotation(
            '{"user":"u","claimedAt":"2026-03-01T12:00:00Z","receipt":"r","exitCode":"7"}'
        )


# -- status.execution and the audit -----------------------------------------------------------


def test_a_claim_becomes_status_execution_and_a_claimed_record(body: dict[str, Any]) -> None:
    claimed = with_record(body, ExecutionRecord(REQUESTER, SOON, receipt_digest(body)))
    request = Request.parse(claimed, KEY)

    transition = lifecycle.reconcile(request, SOON)

    execution = transition.status.execution
    assert execution is not None
    assert execution.finished_at is None
    assert transition.status.phase is Phase.APPROVED
    assert transition.status.to_json()["execution"] == {
        "claimedBy": REQUESTER,
        "claimedAt": "2026-03-01T12:03:00Z",
        "startedAt": "2026-03-01T12:03:00Z",
        "receiptDigest": receipt_digest(body),
    }
    (entry,) = [e for e in transition.audit if e.event == "claimed"]
    assert (entry.actor, entry.event_id) == (REQUESTER, f"{UID}:claimed")
    assert entry.details["secondsAfterApproval"] == 120.0
    assert not [e for e in transition.audit if e.event == "finished"]


@pytest.mark.parametrize(
    ("code", "result"), [(0, "success"), (2, "failure"), ("unknown", "unknown")]
)
def test_a_finish_is_on_record_with_its_result(
    body: dict[str, Any], code: int | str, result: str
) -> None:
    record = ExecutionRecord(
        REQUESTER, SOON, receipt_digest(body), SOON + timedelta(seconds=90), code
    )
    transition = lifecycle.reconcile(Request.parse(with_record(body, record), KEY), SOON)

    data = transition.status.to_json()["execution"]
    assert (data["exitCode"], data["durationSeconds"]) == (code, 90.0)
    assert data["finishedAt"] == "2026-03-01T12:04:30Z"
    (entry,) = [e for e in transition.audit if e.event == "finished"]
    assert entry.outcome == result
    assert entry.event_id == f"{UID}:finished"
    # Running it again on the written status changes nothing (idempotent).
    written = with_record(body, record)
    written["status"] = transition.status.to_json()
    again = lifecycle.reconcile(Request.parse(written, KEY), SOON + timedelta(hours=1))
    assert again.status == transition.status


def test_a_finished_execution_never_changes(body: dict[str, Any]) -> None:
    digest = receipt_digest(body)
    finished = ExecutionRecord(REQUESTER, SOON, digest, SOON + timedelta(seconds=5), 0)
    done = with_record(body, finished)
    done["status"] = lifecycle.reconcile(Request.parse(done, KEY), SOON).status.to_json()
    # Another valid record later (it cannot be issued: the webhook refuses it) changes nothing.
    other = with_record(done, ExecutionRecord(REQUESTER, SOON, digest, SOON, 1))

    status = lifecycle.reconcile(Request.parse(other, KEY), SOON).status

    assert status.execution is not None
    assert status.execution.exit_code == 0


def test_a_record_of_another_receipt_or_a_forged_one_is_not_applied(
    body: dict[str, Any],
) -> None:
    other = with_record(body, ExecutionRecord(REQUESTER, SOON, "sha256:" + "0" * 64))
    forged = copy.deepcopy(body)
    forged["metadata"]["annotations"][ANN_EXECUTION] = (
        ExecutionRecord(REQUESTER, SOON, receipt_digest(body)).signed(b"x" * 32, UID)
    ).to_annotation()

    assert lifecycle.reconcile(Request.parse(other, KEY), SOON).status.execution is None
    transition = lifecycle.reconcile(Request.parse(forged, KEY), SOON)
    assert transition.status.execution is None
    assert [e.reason for e in transition.audit] == [lifecycle.UNTRUSTED]


def test_the_receipt_names_the_policies(body: dict[str, Any]) -> None:
    # A request without policies names none (the list is always there).
    receipt = Request.parse(body, KEY).status.receipt
    assert receipt is not None
    assert json.loads(receipt.payload)["predicate"]["policies"] == []
