"""The webhook's side of `greenlight exec`, in process (adapters/admission.py): a claim or a finish
becomes the signed execution record, or is refused and audited, and nobody else may write that
record."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonpatch
import kopf
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.support.fakekube import FakeKube
from tests.support.marks import APPROVED_PLAN, KEY, approved

from greenlight.adapters import admission, webhookserver
from greenlight.adapters.admission import AdmissionGate
from greenlight.adapters.auditlog import AuditLog
from greenlight.adapters.ledger import Ledger
from greenlight.adapters.policyindex import PolicyIndex
from greenlight.adapters.refusals import RefusalLog
from greenlight.adapters.webhookserver import Route
from greenlight.core.dsse import Signer
from greenlight.core.model import ANN_CLAIM, ANN_EXECUTION, ANN_FINISH, Identity
from greenlight.core.stamps import ExecutionRecord, plan_digest
from greenlight.core.timefmt import now

REQUESTER = "system:serviceaccount:ci:orchestrator"
DIGEST = plan_digest(APPROVED_PLAN)


class AdmissionRefused(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Webhook:
    gate: AdmissionGate
    audit: AuditLog

    async def mutate(self, user: str, old: dict[str, Any], **annotations: str) -> dict[str, Any]:
        """The object after the mutating webhook's answer (as the API server applies it), or
        AdmissionRefused with the answer's message and code."""
        new = copy.deepcopy(old)
        new["metadata"]["annotations"].update(annotations)
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "review-1",
                "operation": "UPDATE",
                "userInfo": {"username": user},
                "object": new,
                "oldObject": old,
            },
        }
        route = Route(cast(Any, admission.admit), mutating=True)
        answer = (await webhookserver.review(route, review, kopf.Memo(gate=self.gate)))["response"]
        if not answer["allowed"]:
            raise AdmissionRefused(answer["status"]["message"], answer["status"]["code"])
        ops = json.loads(base64.b64decode(answer["patch"])) if "patch" in answer else []
        result: dict[str, Any] = jsonpatch.apply_patch(new, ops)
        return result

    def refusals(self) -> list[dict[str, Any]]:
        lines = self.audit.path.read_text().splitlines() if self.audit.path.exists() else []
        return [r for r in map(json.loads, lines) if r["outcome"] == "refused"]


@pytest.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[Webhook]:
    audit = AuditLog(tmp_path / "audit.log", key=b"k" * 32)
    refusals = RefusalLog(audit)
    gate = AdmissionGate(
        FakeKube(), refusals, Ledger(), KEY, Identity("greenlight-operator"), PolicyIndex.fixed()
    )
    yield Webhook(gate, audit)
    await refusals.close()
    audit.close()


@pytest.fixture
def body() -> dict[str, Any]:
    return approved(Signer(Ed25519PrivateKey.generate()), REQUESTER, at=now())


async def test_a_claim_becomes_the_signed_execution_record(
    webhook: Webhook, body: dict[str, Any]
) -> None:
    after = await webhook.mutate(REQUESTER, body, **{ANN_CLAIM: DIGEST})

    annotations = after["metadata"]["annotations"]
    assert ANN_CLAIM not in annotations  # consumed
    record = ExecutionRecord.from_annotation(annotations[ANN_EXECUTION])
    assert record.user == REQUESTER
    assert record.valid(KEY, body["metadata"]["uid"])
    assert not record.finished


async def test_a_claim_by_someone_else_is_refused_and_audited(
    webhook: Webhook, body: dict[str, Any]
) -> None:
    with pytest.raises(AdmissionRefused, match="only the requester") as refused:
        await webhook.mutate("alice", body, **{ANN_CLAIM: DIGEST})

    assert refused.value.code == 403
    (record,) = webhook.refusals()
    assert (record["event"], record["actor"], record["reason"]) == (
        "claim_attempted",
        "alice",
        "not_requester",
    )


async def test_the_claimer_finishes_and_a_leftover_claim_annotation_does_not_block_it(
    webhook: Webhook, body: dict[str, Any]
) -> None:
    running = await webhook.mutate(REQUESTER, body, **{ANN_CLAIM: DIGEST})
    # A claim annotation planted while no webhook covered the object stays unchanged.
    running["metadata"]["annotations"][ANN_CLAIM] = DIGEST

    after = await webhook.mutate(REQUESTER, running, **{ANN_FINISH: "4"})

    annotations = after["metadata"]["annotations"]
    record = ExecutionRecord.from_annotation(annotations[ANN_EXECUTION])
    assert (record.exit_code, record.finished) == (4, True)
    assert ANN_FINISH not in annotations
    assert ANN_CLAIM not in annotations


async def test_claim_and_finish_in_one_write_are_refused(
    webhook: Webhook, body: dict[str, Any]
) -> None:
    with pytest.raises(AdmissionRefused, match="separately"):
        await webhook.mutate(REQUESTER, body, **{ANN_CLAIM: DIGEST, ANN_FINISH: "0"})


async def test_nobody_writes_the_execution_record_themselves(
    webhook: Webhook, body: dict[str, Any]
) -> None:
    forged = ExecutionRecord(REQUESTER, now(), "sha256:" + "0" * 64).signed(KEY, "uid-1")

    with pytest.raises(AdmissionRefused, match="written by Greenlight only"):
        await webhook.mutate(REQUESTER, body, **{ANN_EXECUTION: forged.to_annotation()})


async def test_a_bad_exit_code_is_refused_by_value(webhook: Webhook, body: dict[str, Any]) -> None:
    running = await webhook.mutate(REQUESTER, body, **{ANN_CLAIM: DIGEST})

    with pytest.raises(AdmissionRefused, match="not '300'") as refused:
        await webhook.mutate(REQUESTER, running, **{ANN_FINISH: "300"})
    assert refused.value.code == 400
