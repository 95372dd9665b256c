"""Greenlight's marks in tests: a fixed key, and stamps and records signed with it, so the pure
core can be fed objects as the webhook would have left them (and ones it would not have)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from greenlight.core import lifecycle, receipts
from greenlight.core.dsse import Signer
from greenlight.core.model import ANN_REQUESTED_BY, Action, Phase, Via
from greenlight.core.request import Request, Status
from greenlight.core.stamps import DecisionRecord, Stamp, Subject, plan_digest, record_key
from greenlight.core.timefmt import format_time, parse_time

KEY = b"t" * 32


def stamp(obj: Mapping[str, Any], user: str, groups: tuple[str, ...] = ()) -> str:
    """The requested-by stamp the webhook would write on `obj` for `user`."""
    meta, spec = obj["metadata"], obj["spec"]
    subject = Subject(
        namespace=str(meta["namespace"]),
        action=str(spec["action"]),
        target=str(spec["target"]),
        plan_digest=plan_digest(str((spec.get("plan") or {}).get("details") or "")),
    )
    at = parse_time(str(meta["creationTimestamp"]))
    return Stamp(user, groups, at).signed(KEY, subject).to_annotation()


def signed(record: DecisionRecord, uid: str) -> tuple[str, str]:
    """(annotation key, value) of `record`, issued for the object `uid`."""
    return record_key(record.user), record.signed(KEY, uid).to_annotation()


@dataclass(frozen=True)
class Outcome:
    """A transition with its status as the JSON the operator writes."""

    status: dict[str, Any]
    audit: tuple[lifecycle.AuditEntry, ...]
    entered: Phase | None
    before: Status

    def changes(self, obj: Mapping[str, Any]) -> bool:
        return self.status != (obj.get("status") or {})


def reconcile(obj: Mapping[str, Any], now: datetime) -> Outcome:
    request = Request.parse(obj, KEY)
    transition = lifecycle.reconcile(request, now)
    return Outcome(
        transition.status.to_json(), transition.audit, transition.entered, request.status
    )


APPROVED_AT = datetime(2026, 3, 1, 12, 1, 0, tzinfo=UTC)
APPROVED_PLAN = "- aws:s3:Bucket logs\n"


def approved(
    signer: Signer, requester: str, uid: str = "uid-1", at: datetime = APPROVED_AT
) -> dict[str, Any]:
    """An Approved request (created by `requester` a minute before alice approved it `at`)
    with its receipt signed by `signer`, as the operator leaves it."""
    body: dict[str, Any] = {
        "metadata": {
            "namespace": "ci",
            "name": "destroy-prod",
            "uid": uid,
            "creationTimestamp": format_time(at - timedelta(minutes=1)),
            "annotations": {},
        },
        "spec": {
            "action": "pulumi destroy",
            "target": "production",
            "requester": {"workflowId": "wf-1"},
            "plan": {"summary": "-1", "details": APPROVED_PLAN},
            "timeout": "30m",
        },
    }
    annotations = body["metadata"]["annotations"]
    annotations[ANN_REQUESTED_BY] = stamp(body, requester)
    annotations.update(
        [signed(DecisionRecord("alice", Action.APPROVE, at, Via.KUBECTL, "ok"), uid)]
    )
    request = Request.parse(body, KEY)
    transition = receipts.issue(request, lifecycle.reconcile(request, at), signer)
    assert transition.status.phase is Phase.APPROVED
    assert transition.status.receipt is not None
    body["status"] = transition.status.to_json()
    return body
