"""The admission webhooks: who created a request, who decided it, who deleted it, and nothing
forged.

The API server authenticates every caller; these handlers see that identity (`userinfo`) and:

- on CREATE, stamp the creator into `greenlight.dev/requested-by`, signed with the operator's
  key and bound to the request (core/stamps.py);
- on UPDATE with `greenlight.dev/decision` (or `/cancel`), authorize the caller (RBAC verb by
  SubjectAccessReview, then policy) and replace the request annotations by the caller's signed
  decision record, or refuse with a message that says why (refusals are audited, bounded);
- on UPDATE with `greenlight.dev/claim` (or `/finish`), let the requester claim an Approved
  request's receipt once, before its notAfter, for the approved plan, and the claimer report how
  the command ended: each becomes the signed execution record (`greenlight exec`,
  docs/receipts.md);
- refuse any change by anyone but the operator to Greenlight's annotations and to `status`;
- on DELETE, note who asked (the operator audits the deletion when it sees it happen).

Nothing durable is written for an allowed review: the stamp and the record live on the object
only if the API server persists the write, and the operator audits them when it sees them.
All webhooks are registered with failurePolicy Fail: when the operator is down, no decision
(and no new request) can be recorded. That is the gate failing closed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import kopf
import structlog
from opentelemetry import trace

from greenlight.adapters.decisions import authorize, issue
from greenlight.adapters.ledger import Ledger
from greenlight.adapters.policyindex import NotReady, PolicyIndex
from greenlight.adapters.refusals import RefusalLog
from greenlight.core import identity, receipts
from greenlight.core.model import (
    ANN_CANCEL,
    ANN_CLAIM,
    ANN_DECISION,
    ANN_EXECUTION,
    ANN_FINISH,
    ANN_REASON,
    ANN_REQUESTED_BY,
    GROUP,
    OPERATOR_OWNED_PREFIXES,
    PLURAL,
    POLICY_REFUSAL,
    VERSION,
    Action,
    Identity,
    Via,
)
from greenlight.core.plans import PlanError, PlanReading, read_plan
from greenlight.core.policies import Outcome, PolicyDecision
from greenlight.core.request import Request
from greenlight.core.stamps import (
    DecisionRecord,
    ExecutionRecord,
    Stamp,
    Subject,
    plan_digest,
    record_key,
)
from greenlight.core.timefmt import now
from greenlight.kube import Kube
from greenlight.telemetry import metrics, spans

MUTATE_ID = "greenlight-admission-mutate"
VALIDATE_ID = "greenlight-admission-validate"
STATUS_ID = "greenlight-admission-status"
DELETE_ID = "greenlight-admission-delete"
DECISION_VALUES = {"approve": Action.APPROVE, "deny": Action.DENY}
USER_ANNOTATIONS = (ANN_DECISION, ANN_REASON, ANN_CANCEL)
EXECUTION_ANNOTATIONS = (ANN_CLAIM, ANN_FINISH)
_log = structlog.get_logger("greenlight.admission")


@dataclass
class AdmissionGate:
    """What the webhook handlers need (kept in kopf's memo as `gate`)."""

    kube: Kube
    refusals: RefusalLog
    ledger: Ledger
    marks_key: bytes
    operator: Identity
    policies: PolicyIndex
    extra_operator_users: frozenset[str] = field(default_factory=frozenset)

    def is_operator(self, caller: Identity) -> bool:
        """The operator's own writes (status, decision records from chat)."""
        return caller.user == self.operator.user or caller.user in self.extra_operator_users

    def key_for(self, dryrun: bool) -> bytes:
        """The key marks are signed and checked with. A dry run gets marks of the same shape
        under a key derived for dry runs only, which the operator never accepts: a dry-run
        decision (`kubectl annotate --dry-run=server`) is not a signed record to plant later."""
        if not dryrun:
            return self.marks_key
        return hmac.new(self.marks_key, b"greenlight/dry-run/v1", hashlib.sha256).digest()


def identity_of(userinfo: Mapping[str, Any]) -> Identity:
    extra = {str(k): tuple(str(x) for x in v) for k, v in (userinfo.get("extra") or {}).items()}
    return Identity(
        user=str(userinfo.get("username", "")),
        groups=tuple(str(g) for g in userinfo.get("groups") or ()),
        uid=str(userinfo.get("uid", "")),
        extra=extra,
    )


def check_shape(userinfo: Any, *bodies: Any) -> None:
    """Refuse (400) a review whose caller or objects do not have the shape the API server gives
    them, before anything reads them: a malformed review is answered, never audited."""
    problem = _shape_problem(userinfo, bodies)
    if problem is not None:
        raise kopf.AdmissionError(f"malformed admission review: {problem}", code=400)


def _shape_problem(userinfo: Any, bodies: tuple[Any, ...]) -> str | None:
    def strings(value: Any) -> bool:
        return isinstance(value, list | tuple) and all(isinstance(x, str) for x in value)

    if not isinstance(userinfo, Mapping):
        return "userInfo is not an object"
    if not isinstance(userinfo.get("username", ""), str):
        return "userInfo.username is not a string"
    if not isinstance(userinfo.get("uid", ""), str):
        return "userInfo.uid is not a string"
    if not strings(userinfo.get("groups") or []):
        return "userInfo.groups is not a list of strings"
    extra = userinfo.get("extra") or {}
    if not isinstance(extra, Mapping) or not all(strings(v) for v in extra.values()):
        return "userInfo.extra is not a map of string lists"
    for body in bodies:
        if body is None:
            continue
        if not isinstance(body, Mapping):
            return "the object is not an object"
        for part in ("metadata", "spec", "status"):
            if not isinstance(body.get(part) or {}, Mapping):
                return f"{part} is not an object"
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        annotations = meta.get("annotations") or {}
        if not isinstance(annotations, Mapping) or not all(
            isinstance(v, str) for v in annotations.values()
        ):
            return "metadata.annotations is not a map of strings"
        for part in ("plan", "requester", "policy", "notify"):
            if not isinstance(spec.get(part) or {}, Mapping):
                return f"spec.{part} is not an object"
    return None


def check_policy_shape(userinfo: Any, body: Any) -> None:
    """`check_shape` for a policy object: caller and metadata only (compile_policy checks the
    rest and names the field)."""
    problem = _shape_problem(userinfo, ())
    if problem is None and body is not None and not isinstance(body, Mapping):
        problem = "the object is not an object"
    if problem is not None:
        raise kopf.AdmissionError(f"malformed admission review: {problem}", code=400)


def owned(annotations: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k.startswith(OPERATOR_OWNED_PREFIXES)}


def lifetime_problem(old: Mapping[str, Any], new: Mapping[str, Any] | None) -> str | None:
    """Why an update may not change what decides when the request goes away, or None.

    An owner reference to an object that does not exist has the garbage collector delete the
    request, and a finalizer holds its deletion: either would let anyone who may patch (an
    approver, a requester) do what only `delete` may, in the collector's name. Both are set at
    creation or not at all; finalizers may still be removed (a stuck deletion is cleaned up)."""
    before, after = (old.get("metadata") or {}), ((new or {}).get("metadata") or {})
    if (before.get("ownerReferences") or []) != (after.get("ownerReferences") or []):
        return "metadata.ownerReferences of an ApprovalRequest are set when it is created only"
    added = set(after.get("finalizers") or []) - set(before.get("finalizers") or [])
    if added:
        return (
            f"finalizer {sorted(added)[0]!r} cannot be added to an ApprovalRequest after it is "
            "created (finalizers may be removed)"
        )
    return None


def annotations_of(body: Mapping[str, Any] | None) -> dict[str, str]:
    if body is None:
        return {}
    return dict((body.get("metadata") or {}).get("annotations") or {})


def subject_of(body: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The audit subject of a reviewed object (a new one has no uid or timestamp yet). The
    status of a new one is whatever its creator sent (the API server drops it only after
    admission), so it is not read: only a stored object's status is the operator's."""
    if body is None:
        return None
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    status = (body.get("status") or {}) if meta.get("uid") else {}
    details = (spec.get("plan") or {}).get("details")
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name") or meta.get("generateName"),
        "uid": meta.get("uid"),
        "planDigest": status.get("planDigest")
        or plan_digest(details if isinstance(details, str) else ""),
        "phase": status.get("phase"),
        "requestedBy": status.get("requestedBy"),
    }


def stamp_subject(body: Mapping[str, Any]) -> Subject:
    """What the requested-by stamp is bound to, read from the object as sent (the schema has
    not been applied yet when the mutating webhook runs)."""
    spec = body.get("spec") or {}
    details = (spec.get("plan") or {}).get("details")
    return Subject(
        namespace=str((body.get("metadata") or {}).get("namespace", "")),
        action=str(spec.get("action", "")),
        target=str(spec.get("target", "")),
        plan_digest=plan_digest(str(details or "")),
    )


def requested_action(annotations: Mapping[str, str]) -> Action | None:
    """The decision asked for by the user's annotations; AdmissionError names a bad value."""
    decision = annotations.get(ANN_DECISION)
    cancel = annotations.get(ANN_CANCEL)
    if decision is not None and cancel is not None:
        raise kopf.AdmissionError(
            f"set either {ANN_DECISION} or {ANN_CANCEL}=true, not both", code=400
        )
    if cancel is not None:
        if cancel != "true":
            raise kopf.AdmissionError(f"{ANN_CANCEL} must be 'true', not {cancel!r}", code=400)
        return Action.CANCEL
    if decision is None:
        return None
    action = DECISION_VALUES.get(decision.strip().lower())
    if action is None:
        raise kopf.AdmissionError(
            f"{ANN_DECISION} must be 'approve' or 'deny', not {decision!r}", code=400
        )
    return action


async def refuse(
    gate: AdmissionGate,
    body: Mapping[str, Any] | None,
    caller: Identity,
    reason: str,
    error: kopf.AdmissionError,
    *,
    dryrun: bool,
    event: str = "decision_attempted",
) -> NoReturn:
    """Refuse a write and audit the refusal (bounded, rate-limited per caller). The refusal
    stands even when the audit record cannot be written: failing closed never needs the log."""
    if not dryrun:
        await gate.refusals.refuse(
            caller.user,
            reason,
            request=subject_of(body),
            details={"message": str(error), "groups": list(caller.groups), "via": "kubectl"},
            event=event,
        )
    raise error


@kopf.on.mutate(
    GROUP,
    VERSION,
    PLURAL,
    id=MUTATE_ID,
    operations=["CREATE", "UPDATE"],
    side_effects=True,
    ignore_failures=False,
    persistent=True,
)
async def admit(
    *,
    operation: str | None = None,
    userinfo: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
    new: Mapping[str, Any] | None = None,
    patch: kopf.Patch,
    dryrun: bool,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    gate: AdmissionGate = memo["gate"]
    check_shape(userinfo, old, new)
    caller = identity_of(userinfo)
    before, after = annotations_of(old), annotations_of(new)
    if not gate.is_operator(caller) and owned(before) != owned(after):
        changed = sorted(set(owned(before).items()) ^ set(owned(after).items()))
        forged = kopf.AdmissionError(
            f"annotation {changed[0][0]} is written by Greenlight only; "
            f"use {ANN_DECISION}=approve|deny or {ANN_CANCEL}=true instead",
            code=403,
        )
        await refuse(gate, old or new, caller, "forged_annotation", forged, dryrun=dryrun)
    if operation == "CREATE" and new is not None:
        await _admit_create(gate, caller, new, after, patch, dryrun)
        return
    if old is None:
        return
    lifetime = None if gate.is_operator(caller) else lifetime_problem(old, new)
    if lifetime is not None:
        error = kopf.AdmissionError(lifetime, code=403)
        await refuse(gate, old, caller, "invalid_value", error, dryrun=dryrun)
    deciding = any(before.get(k) != after.get(k) for k in USER_ANNOTATIONS)
    executing = any(k in after and before.get(k) != after.get(k) for k in EXECUTION_ANNOTATIONS)
    if deciding and executing:
        mixed = kopf.AdmissionError(
            f"a decision and {ANN_CLAIM}/{ANN_FINISH} cannot be written together", code=400
        )
        await refuse(gate, old, caller, "invalid_value", mixed, dryrun=dryrun)
    if deciding:
        await _admit_update(gate, caller, old, before, after, patch, dryrun)
    elif executing:
        await _admit_execution(gate, caller, old, after, patch, dryrun)


async def _admit_update(
    gate: AdmissionGate,
    caller: Identity,
    old: Mapping[str, Any],
    before: Mapping[str, str],
    after: Mapping[str, str],
    patch: kopf.Patch,
    dryrun: bool,
) -> None:
    """A write that touches the decision annotations: a decision, or a refusal."""
    try:
        action = requested_action(after)
    except kopf.AdmissionError as malformed:
        await refuse(gate, old, caller, "invalid_value", malformed, dryrun=dryrun)
    # A reason counts only when this very write sets it, together with a decision.
    reason_now = before.get(ANN_REASON) != after.get(ANN_REASON) and ANN_REASON in after
    if action is None:
        if reason_now:
            alone = kopf.AdmissionError(
                f"{ANN_REASON} is read only together with {ANN_DECISION}=deny|approve "
                "in the same write",
                code=400,
            )
            await refuse(gate, old, caller, "invalid_value", alone, dryrun=dryrun)
        return
    reason = after.get(ANN_REASON, "").strip() if reason_now else ""
    with trace.get_tracer("greenlight.operator").start_as_current_span(
        spans.ADMISSION, attributes={spans.ATTR_REQUEST_NAME: _name(old)}
    ) as span:
        await _admit_decision(gate, caller, action, reason, after, old, patch, dryrun, span)


def _name(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name", ""))


async def _admit_create(
    gate: AdmissionGate,
    caller: Identity,
    new: Mapping[str, Any],
    after: Mapping[str, str],
    patch: kopf.Patch,
    dryrun: bool,
) -> None:
    for key in (*USER_ANNOTATIONS, *EXECUTION_ANNOTATIONS):
        if key in after:
            premature = kopf.AdmissionError(
                f"{key} cannot be set when the request is created; decide it afterwards",
                code=400,
            )
            await refuse(gate, new, caller, "invalid_value", premature, dryrun=dryrun)
    reading = await _read_plan(gate, caller, new, dryrun)
    decision = await _judge_by_policy(gate, caller, new, reading, dryrun)
    policy = decision.effective.to_json()
    if decision.condition_errors:
        policy["conditionErrors"] = [
            {"policy": e.source, "message": e.message} for e in decision.condition_errors
        ]
    stamp = Stamp(
        caller.user,
        caller.groups,
        now(),
        policy=policy,
        plan=reading.to_json() if reading is not None else None,
    ).signed(gate.key_for(dryrun), stamp_subject(new))
    patch.metadata.annotations[ANN_REQUESTED_BY] = stamp.to_annotation()


async def _read_plan(
    gate: AdmissionGate, caller: Identity, new: Mapping[str, Any], dryrun: bool
) -> PlanReading | None:
    """Greenlight's own reading of a machine-readable plan; a plan that does not parse is
    refused with the position of the error."""
    plan = (new.get("spec") or {}).get("plan") or {}
    try:
        return read_plan(str(plan.get("format") or "text"), str(plan.get("details") or ""))
    except PlanError as exc:
        malformed = kopf.AdmissionError(str(exc), code=400)
        await refuse(gate, new, caller, "invalid_value", malformed, dryrun=dryrun)


async def _judge_by_policy(
    gate: AdmissionGate,
    caller: Identity,
    new: Mapping[str, Any],
    reading: PlanReading | None,
    dryrun: bool,
) -> PolicyDecision:
    """The effective policy of a new request, or a refusal that names the policy."""
    namespace = str((new.get("metadata") or {}).get("namespace", ""))
    broken = gate.policies.broken_in_scope(namespace)
    if broken:
        unreadable = kopf.AdmissionError(
            f"{POLICY_REFUSAL}: {', '.join(broken)} cannot be read by Greenlight "
            "(fix or delete it; `kubectl apply` shows what is wrong), so no request it could "
            "apply to is accepted",
            code=403,
        )
        await refuse(gate, new, caller, "policy_refused", unreadable, dryrun=dryrun)
    try:
        decision = gate.policies.decide(namespace, new.get("spec") or {}, caller, reading)
    except NotReady as exc:
        raise kopf.AdmissionError(str(exc), code=503) from exc
    metrics.count_policy_evaluation(decision.outcome.value)
    for error in decision.condition_errors:
        _log.warning(
            "a policy condition failed; read strictly", policy=error.source, error=error.message
        )
    if decision.outcome is Outcome.REFUSE:
        refused = kopf.AdmissionError(f"{POLICY_REFUSAL}: {decision.refusal_message}", code=403)
        await refuse(gate, new, caller, "policy_refused", refused, dryrun=dryrun)
    return decision


async def _admit_decision(
    gate: AdmissionGate,
    caller: Identity,
    action: Action,
    reason: str,
    after: Mapping[str, str],
    old: Mapping[str, Any],
    patch: kopf.Patch,
    dryrun: bool,
    span: trace.Span,
) -> None:
    """Authorize one decision; on success swap the request annotations for a signed record."""
    at = now()
    request = Request.parse(old, gate.marks_key)
    verdict = await authorize(
        gate.kube,
        request.view(),
        caller,
        action,
        reason,
        at,
        verified=request.marks.stamp is not None,
    )
    if not verdict.allowed:
        span.set_attribute(spans.ATTR_REFUSAL_REASON, verdict.code)
        error = kopf.AdmissionError(verdict.message, code=403)
        await refuse(gate, old, caller, verdict.code, error, dryrun=dryrun)
    for key in USER_ANNOTATIONS:
        if key in after:
            patch.metadata.annotations[key] = None
    # A duplicate approval is recorded too (it replaces the caller's earlier record): the
    # operator audits it, counted once.
    key, value = issue(gate.key_for(dryrun), request.uid, caller, action, reason, Via.KUBECTL, at)
    patch.metadata.annotations[key] = value


async def _admit_execution(
    gate: AdmissionGate,
    caller: Identity,
    old: Mapping[str, Any],
    after: Mapping[str, str],
    patch: kopf.Patch,
    dryrun: bool,
) -> None:
    """A claim of the receipt, or the report that the claimed command ended: swap the
    annotation for the signed execution record, or refuse with who claimed it and when. Claims
    are compare-and-swap writes (the CLI sends the resourceVersion it read), so of two
    concurrent claims the API server lets exactly one through; this check is the second line."""
    request = Request.parse(old, gate.marks_key)
    at = now()
    before = annotations_of(old)
    claiming = ANN_CLAIM in after and before.get(ANN_CLAIM) != after[ANN_CLAIM]
    finishing = ANN_FINISH in after and before.get(ANN_FINISH) != after[ANN_FINISH]
    event = "claim_attempted" if claiming else "finish_attempted"
    if claiming and finishing:
        both = kopf.AdmissionError(f"write {ANN_CLAIM} and {ANN_FINISH} separately", code=400)
        await refuse(gate, old, caller, "invalid_value", both, dryrun=dryrun, event=event)
    if claiming:
        outcome = receipts.claim(request, caller.user, after[ANN_CLAIM].strip(), at)
        if not dryrun:
            metrics.count_verification(
                outcome.code if isinstance(outcome, receipts.ClaimRefusal) else receipts.CLAIM_VALID
            )
    else:
        try:
            code = receipts.parse_exit_code(after[ANN_FINISH])
        except ValueError as exc:
            invalid = kopf.AdmissionError(f"{ANN_FINISH}: {exc}", code=400)
            await refuse(gate, old, caller, "invalid_value", invalid, dryrun=dryrun, event=event)
        outcome = receipts.finish(request, caller.user, code, at)
    if isinstance(outcome, receipts.ClaimRefusal):
        error = kopf.AdmissionError(outcome.message, code=403)
        await refuse(gate, old, caller, outcome.code, error, dryrun=dryrun, event=event)
    for key in EXECUTION_ANNOTATIONS:
        if key in after:
            patch.metadata.annotations[key] = None
    patch.metadata.annotations[ANN_EXECUTION] = outcome.signed(
        gate.key_for(dryrun), request.uid
    ).to_annotation()


@kopf.on.validate(
    GROUP,
    VERSION,
    PLURAL,
    id=VALIDATE_ID,
    operations=["CREATE", "UPDATE"],
    side_effects=True,  # refusals are audited (not on a dry run)
    ignore_failures=False,
    persistent=True,
)
async def check_owned_annotations(
    *,
    operation: str | None = None,
    userinfo: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
    new: Mapping[str, Any] | None = None,
    dryrun: bool = False,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """After mutation, a caller may have changed exactly one of Greenlight's annotations: their
    own decision record (or, on CREATE, the stamp naming them), issued by Greenlight just now.
    Anything else is forged."""
    gate: AdmissionGate = memo["gate"]
    check_shape(userinfo, old, new)
    caller = identity_of(userinfo)
    if operation == "CREATE" and new is not None:
        # After the schema (and its CEL rules) accepted the object: what they cannot express.
        problem = identity.on_behalf_of_problem(new.get("spec") or {})
        if problem is not None:
            invalid = kopf.AdmissionError(problem, code=400)
            await refuse(gate, new, caller, "invalid_value", invalid, dryrun=dryrun)
    if gate.is_operator(caller):
        return
    before, after = owned(annotations_of(old)), owned(annotations_of(new))
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    allowed = (
        {record_key(caller.user), ANN_EXECUTION} if operation == "UPDATE" else {ANN_REQUESTED_BY}
    )
    for key in sorted(changed):
        value = after.get(key, "")
        if key not in allowed or not _issued_to(gate.key_for(dryrun), caller, key, value, old, new):
            forged = kopf.AdmissionError(
                f"annotation {key} is written by Greenlight only", code=403
            )
            await refuse(gate, old or new, caller, "forged_annotation", forged, dryrun=dryrun)


def _issued_to(
    marks_key: bytes,
    caller: Identity,
    key: str,
    value: str,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
) -> bool:
    """Whether `value` is a mark Greenlight issued to `caller` for this object."""
    try:
        if key == ANN_REQUESTED_BY and new is not None:
            stamp = Stamp.from_annotation(value)
            return stamp.user == caller.user and stamp.valid(marks_key, stamp_subject(new), now())
        uid = str(((old or {}).get("metadata") or {}).get("uid", ""))
        if key == ANN_EXECUTION:
            execution = ExecutionRecord.from_annotation(value)
            return execution.user == caller.user and execution.valid(marks_key, uid)
        record = DecisionRecord.from_annotation(value)
    except ValueError:
        return False
    return record.user == caller.user and record.valid(marks_key, uid)


@kopf.on.validate(
    GROUP,
    VERSION,
    PLURAL,
    id=STATUS_ID,
    operations=["UPDATE"],
    subresource="status",
    side_effects=True,  # refusals are audited (not on a dry run)
    ignore_failures=False,
    persistent=True,
)
async def protect_status(
    *,
    userinfo: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
    dryrun: bool = False,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Only the operator writes status: the decision on record is the one it made."""
    gate: AdmissionGate = memo["gate"]
    check_shape(userinfo, old)
    caller = identity_of(userinfo)
    if not gate.is_operator(caller):
        forged = kopf.AdmissionError(
            "status of an ApprovalRequest is written by Greenlight only; "
            f"to decide, use {ANN_DECISION}=approve|deny",
            code=403,
        )
        await refuse(gate, old, caller, "forged_annotation", forged, dryrun=dryrun)


@kopf.on.validate(
    GROUP,
    VERSION,
    PLURAL,
    id=DELETE_ID,
    operations=["DELETE"],
    side_effects=False,
    ignore_failures=False,
    persistent=True,
)
async def note_deletion(
    *,
    userinfo: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
    dryrun: bool = False,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Remember who asked to delete a request; the operator audits the deletion once it sees
    the object gone (a refused or failed delete leaves no record behind)."""
    gate: AdmissionGate = memo["gate"]
    check_shape(userinfo, old)
    if dryrun or old is None:
        return
    uid = str((old.get("metadata") or {}).get("uid", ""))
    gate.ledger.deleting(uid, identity_of(userinfo).user)
