"""Signed approval receipts: an in-toto Statement (v1) about the approved plan, in a DSSE envelope.

When a request becomes Approved the operator signs a *receipt*: a statement whose subject is the
plan (its SHA-256) and whose predicate (`https://greenlight.dev/approval/v1`) says which request
was approved, for which action and target, by whom and when, and until when the approval may be
used (`notAfter` = decision time + `spec.validFor`). Whoever runs the action checks it offline
with the operator's public keys (`verify`): the signature, the plan's digest, the action and
target, and the time.

The envelope is DSSE v1 with Ed25519 (core/dsse.py). Ed25519 is deterministic, so signing the
same statement again gives the same envelope: a converger that decides twice writes one receipt.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from greenlight.core.dsse import Envelope, Signer, pae, valid_signature
from greenlight.core.lifecycle import AuditEntry, Transition
from greenlight.core.model import ANN_EXECUTION, Phase
from greenlight.core.request import Request, Status
from greenlight.core.stamps import EXIT_UNKNOWN, ExecutionRecord
from greenlight.core.timefmt import format_time, parse_time

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://greenlight.dev/approval/v1"
SUBJECT_NAME = "plan"
RECEIPT_EVENT = "receipt_issued"


def statement(request: Request, status: Status) -> dict[str, Any]:
    """The in-toto Statement for an Approved `status` of `request`."""
    decision = status.decision
    if status.phase is not Phase.APPROVED or decision is None:
        raise ValueError("only an Approved request has a receipt")
    spec = request.spec
    digest = (status.plan_digest or spec.plan_digest).removeprefix("sha256:")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": SUBJECT_NAME, "digest": {"sha256": digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "namespace": request.namespace,
            "name": request.name,
            "uid": request.uid,
            "action": spec.action,
            "target": spec.target,
            "workflowId": spec.workflow_id,
            "taskId": spec.task_id,
            "requester": status.requested_by or request.requested_by,
            "onBehalfOf": spec.on_behalf_of,
            # The effective count (the stamped policy's, when one applied), not the spec's.
            "requiredApprovals": (
                request.policy.required_approvals
                if request.policy is not None
                else spec.required_approvals
            ),
            # The policies that decided who had to approve (names; [] for the request's own).
            "policies": list(request.policy.sources) if request.policy is not None else [],
            "approvers": [
                {"user": a.user, "at": format_time(a.at), "via": a.via.value}
                for a in status.approvals
            ],
            "decidedAt": format_time(decision.at),
            "notAfter": format_time(decision.at + spec.valid_for),
        },
    }


def not_after(request: Request, status: Status) -> datetime | None:
    """Until when the receipt of an Approved `status` may be used (None: no decision)."""
    return status.decision.at + request.spec.valid_for if status.decision else None


def serialize(data: Mapping[str, Any]) -> bytes:
    """The payload bytes: compact JSON with sorted keys (one byte string per statement)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def issue(request: Request, transition: Transition, signer: Signer) -> Transition:
    """`transition` with a receipt added when it moves the request into Approved, and the
    `receipt_issued` audit entry (written before the status, like every record). The receipt
    lands in the same status write as the phase, so it exists exactly for Approved requests; a
    request approved before receipts existed is left without one rather than given a receipt
    dated later than its decision."""
    status = transition.status
    if transition.entered is not Phase.APPROVED or status.receipt is not None:
        return transition
    envelope = signer.sign(PAYLOAD_TYPE, serialize(statement(request, status)))
    entry = AuditEntry(
        RECEIPT_EVENT,
        actor="greenlight",
        outcome="issued",
        event_id=f"{request.uid}:receipt",
        details={"digest": envelope.digest, "keyid": signer.key_id},
    )
    return replace(
        transition,
        status=replace(status, receipt=envelope),
        audit=(*transition.audit, entry),
    )


class Outcome(enum.StrEnum):
    VALID = "valid"
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    PLAN_MISMATCH = "plan_mismatch"
    ACTION_MISMATCH = "action_mismatch"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Verification:
    outcome: Outcome
    reason: str
    predicate: Mapping[str, Any] | None = None  # set once the signature was checked

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.VALID


def plan_sha256(plan: bytes) -> str:
    return hashlib.sha256(plan).hexdigest()


def verify(
    envelope: object,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    plan: bytes,
    action: str,
    target: str,
    now: datetime,
    namespace: str | None = None,
    name: str | None = None,
    uid: str | None = None,
) -> Verification:
    """Check a receipt (an `Envelope` or its JSON form) for running `action` on `target` with
    `plan` at `now`. `public_keys` maps key ids to the operator's published keys. The checks run
    in this order and the first failure is the outcome: form, signature, plan, action and
    target (and the request's `namespace`, `name` and `uid`, each when given: whose approvers
    said yes is the namespace's, so a site that trusts one namespace's approvers names it),
    time. Nothing in the payload is trusted before its signature is."""
    try:
        env = envelope if isinstance(envelope, Envelope) else Envelope.from_json(envelope)
    except ValueError as exc:
        return Verification(Outcome.MALFORMED, str(exc))
    if env.payload_type != PAYLOAD_TYPE:
        return Verification(
            Outcome.MALFORMED, f"payloadType is {env.payload_type!r}, not {PAYLOAD_TYPE!r}"
        )
    known = [s for s in env.signatures if s.keyid in public_keys]
    if not known:
        ids = ", ".join(s.keyid[:16] or "(none)" for s in env.signatures)
        return Verification(Outcome.UNKNOWN_KEY, f"signed by no published key (key ids: {ids})")
    message = pae(env.payload_type, env.payload)
    if not any(valid_signature(public_keys[s.keyid], s.sig, message) for s in known):
        return Verification(
            Outcome.BAD_SIGNATURE, "the signature does not match the payload (edited or forged)"
        )
    try:
        predicate, digest = _parse_statement(env.payload)
        not_after = parse_time(str(predicate["notAfter"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return Verification(Outcome.MALFORMED, f"signed, but not a Greenlight approval: {exc}")
    actual = plan_sha256(plan)
    if actual != digest:
        return Verification(
            Outcome.PLAN_MISMATCH,
            f"the plan's sha256 is {actual[:16]}…, the approved plan's is {digest[:16]}…",
            predicate,
        )
    expected = {"action": action, "target": target, "namespace": namespace, "name": name}
    expected["uid"] = uid
    for field, wanted in expected.items():
        if wanted is not None and predicate.get(field) != wanted:
            return Verification(
                Outcome.ACTION_MISMATCH,
                f"approved {field} is {predicate.get(field)!r}, not {wanted!r}",
                predicate,
            )
    if now >= not_after:
        return Verification(
            Outcome.EXPIRED, f"the approval could be used until {format_time(not_after)}", predicate
        )
    approvers = ", ".join(
        str(a.get("user") if isinstance(a, Mapping) else a)
        for a in predicate.get("approvers") or ()
    )
    return Verification(
        Outcome.VALID,
        f"{predicate.get('namespace')}/{predicate.get('name')} approved by {approvers}, "
        f"valid until {format_time(not_after)}",
        predicate,
    )


def _parse_statement(payload: bytes) -> tuple[Mapping[str, Any], str]:
    """The predicate and the plan's digest (hex) of a signed payload."""
    data = json.loads(payload)
    if not isinstance(data, Mapping) or data.get("_type") != STATEMENT_TYPE:
        raise ValueError(f"_type is not {STATEMENT_TYPE}")
    if data.get("predicateType") != PREDICATE_TYPE:
        raise ValueError(f"predicateType is not {PREDICATE_TYPE}")
    subjects = [s for s in data.get("subject") or () if s.get("name") == SUBJECT_NAME]
    if len(subjects) != 1:
        raise ValueError("the statement needs exactly one subject named plan")
    digest = subjects[0].get("digest", {}).get("sha256")
    predicate = data.get("predicate")
    if not isinstance(digest, str) or not isinstance(predicate, Mapping):
        raise ValueError("the plan subject has no sha256 digest, or there is no predicate")
    return predicate, digest


# Why a claim or a finish is refused (also the `result` label of verifications at claim time).
CLAIM_VALID = "valid"
NO_RECEIPT = "no_receipt"
NOT_REQUESTER = "not_requester"
ALREADY_CLAIMED = "already_claimed"
CLAIM_EXPIRED = "expired"
CLAIM_PLAN_MISMATCH = "plan_mismatch"
UNTRUSTED_EXECUTION = "untrusted_record"
NOT_CLAIMED = "not_claimed"
NOT_CLAIMER = "not_claimer"
ALREADY_FINISHED = "already_finished"
EXIT_CODE_MAX = 255


@dataclass(frozen=True)
class ClaimRefusal:
    code: str
    message: str


def claim(request: Request, user: str, digest: str, at: datetime) -> ExecutionRecord | ClaimRefusal:
    """Claim the receipt of `request` for `user` at `at`, who verified a plan of `digest`:
    the unsigned execution record, or why not. Only the requester claims, once, before notAfter,
    for the approved plan."""
    status = request.status
    receipt, deadline = status.receipt, not_after(request, status)
    if status.phase is not Phase.APPROVED or receipt is None or deadline is None:
        phase = status.phase.value if status.phase else "not handled yet"
        return ClaimRefusal(NO_RECEIPT, f"the request is {phase}: there is no receipt to claim")
    if ANN_EXECUTION in request.marks.untrusted:
        return ClaimRefusal(
            UNTRUSTED_EXECUTION,
            "an execution record Greenlight did not issue is on the request; nothing claims it",
        )
    record = request.marks.execution
    if record is not None:
        return ClaimRefusal(
            ALREADY_CLAIMED,
            f"already claimed by {record.user} at {format_time(record.claimed_at)}"
            + (" (finished)" if record.finished else " (not finished)"),
        )
    if user != request.requested_by:
        return ClaimRefusal(
            NOT_REQUESTER,
            f"only the requester ({request.requested_by or 'unknown'}) may claim this approval, "
            f"not {user}",
        )
    if at >= deadline:
        return ClaimRefusal(
            CLAIM_EXPIRED, f"the approval could be used until {format_time(deadline)}"
        )
    approved = status.plan_digest or request.spec.plan_digest
    if digest != approved:
        return ClaimRefusal(
            CLAIM_PLAN_MISMATCH,
            f"the plan verified has digest {digest[:23]}…, the approved plan {approved[:23]}…",
        )
    return ExecutionRecord(user=user, claimed_at=at, receipt=receipt.digest)


def finish(
    request: Request, user: str, exit_code: int | str, at: datetime
) -> ExecutionRecord | ClaimRefusal:
    """Report that the claimed command ended: the unsigned, finished record, or why not."""
    record = request.marks.execution
    if record is None:
        return ClaimRefusal(NOT_CLAIMED, "nothing was claimed on this request: claim it first")
    if record.user != user:
        return ClaimRefusal(
            NOT_CLAIMER, f"claimed by {record.user}: only they report how it ended, not {user}"
        )
    if record.finished:
        return ClaimRefusal(
            ALREADY_FINISHED,
            f"already reported finished at {format_time(record.finished_at or at)} "
            f"with exit code {record.exit_code}",
        )
    return replace(record, finished_at=at, exit_code=exit_code, mac="")


def parse_exit_code(value: str) -> int | str:
    """An exit code as `greenlight.dev/finish` carries it: 0..255, or "unknown"."""
    text = value.strip()
    if text == EXIT_UNKNOWN:
        return EXIT_UNKNOWN
    if text.isascii() and text.isdigit() and int(text) <= EXIT_CODE_MAX:
        return int(text)
    raise ValueError(f"an exit code from 0 to {EXIT_CODE_MAX} or {EXIT_UNKNOWN!r}, not {value!r}")
