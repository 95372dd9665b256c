"""The admission webhooks: who created a request, who decided it, and nothing forged.

The API server authenticates every caller; these handlers see that identity (`userinfo`) and:

- on CREATE, stamp the creator into the operator-owned annotation `greenlight.dev/requested-by`
  (the operator copies it into `status.requestedBy`);
- on UPDATE with `greenlight.dev/decision` (or `/cancel`), authorize the caller (RBAC verb by
  SubjectAccessReview, then policy), audit the attempt, and replace the request annotations by a
  decision record keyed by the caller, or refuse with a message that says why;
- refuse any change by anyone but the operator to operator-owned annotations and to `status`.

Both webhooks are registered with failurePolicy Fail: when the operator is down, no decision
(and no new request) can be recorded. That is the gate failing closed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

import kopf
from opentelemetry import trace

from greenlight.adapters.auditlog import AuditWriteError, request_summary
from greenlight.adapters.decisions import DecisionRefused, audit_attempt, authorize
from greenlight.adapters.runtime import Runtime
from greenlight.core import lifecycle
from greenlight.core.model import (
    ANN_CANCEL,
    ANN_DECISION,
    ANN_REASON,
    ANN_REQUESTED_BY,
    GROUP,
    OPERATOR_OWNED_PREFIXES,
    PLURAL,
    VERSION,
    Action,
    Identity,
    Via,
)
from greenlight.core.timefmt import now
from greenlight.telemetry import metrics, spans

MUTATE_ID = "greenlight-admission-mutate"
VALIDATE_ID = "greenlight-admission-validate"
STATUS_ID = "greenlight-admission-status"
DECISION_VALUES = {"approve": Action.APPROVE, "deny": Action.DENY}


def identity_of(userinfo: Mapping[str, Any]) -> Identity:
    extra = {str(k): tuple(str(x) for x in v) for k, v in (userinfo.get("extra") or {}).items()}
    return Identity(
        user=str(userinfo.get("username", "")),
        groups=tuple(str(g) for g in userinfo.get("groups") or ()),
        uid=str(userinfo.get("uid", "")),
        extra=extra,
    )


def owned(annotations: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k.startswith(OPERATOR_OWNED_PREFIXES)}


def annotations_of(body: Mapping[str, Any] | None) -> dict[str, str]:
    if body is None:
        return {}
    return dict((body.get("metadata") or {}).get("annotations") or {})


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
    runtime: Runtime,
    body: Mapping[str, Any] | None,
    caller: Identity,
    reason: str,
    error: kopf.AdmissionError,
    *,
    dryrun: bool,
) -> NoReturn:
    """Refuse a write that is not a well-formed decision (forged, malformed, premature), and
    audit it like any refused decision attempt. The refusal stands even when the audit record
    cannot be written: failing closed never needs the log."""
    metrics.refuse(reason)
    if not dryrun:
        try:
            await runtime.audit.record(
                "decision_attempted",
                request=request_summary(body) if body is not None else None,
                actor=caller.user,
                outcome="refused",
                reason=reason,
                details={"message": str(error), "groups": list(caller.groups)},
            )
        except AuditWriteError:
            metrics.AUDIT_WRITE_FAILURES.inc()
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
    runtime: Runtime = memo["runtime"]
    caller = identity_of(userinfo)
    before, after = annotations_of(old), annotations_of(new)
    # The operator's own writes (status, kopf's bookkeeping, Slack decision records) may touch
    # operator-owned annotations. Everything else — the requested-by stamp, decisions asked for
    # with annotations — applies to every caller, the operator's identity included (on a local
    # control plane a person may share it).
    if not runtime.is_operator(caller) and owned(before) != owned(after):
        changed = sorted(set(owned(before).items()) ^ set(owned(after).items()))
        forged = kopf.AdmissionError(
            f"annotation {changed[0][0]} is written by Greenlight only; "
            f"use {ANN_DECISION}=approve|deny or {ANN_CANCEL}=true instead",
            code=403,
        )
        await refuse(runtime, old or new, caller, "forged_annotation", forged, dryrun=dryrun)
    if operation == "CREATE":
        for key in (ANN_DECISION, ANN_REASON, ANN_CANCEL):
            if key in after:
                premature = kopf.AdmissionError(
                    f"{key} cannot be set when the request is created; decide it afterwards",
                    code=400,
                )
                await refuse(runtime, new, caller, "invalid_value", premature, dryrun=dryrun)
        patch.metadata.annotations[ANN_REQUESTED_BY] = json.dumps(
            {"user": caller.user, "groups": list(caller.groups)}, sort_keys=True
        )
        return

    if all(before.get(key) == after.get(key) for key in (ANN_DECISION, ANN_CANCEL)):
        return  # this write asks for no decision (e.g. the operator's own status update)
    try:
        action = requested_action(after)
    except kopf.AdmissionError as malformed:
        await refuse(runtime, old, caller, "invalid_value", malformed, dryrun=dryrun)
    if action is None or old is None:
        return
    with trace.get_tracer("greenlight.operator").start_as_current_span(
        spans.ADMISSION, attributes={spans.ATTR_REQUEST_NAME: str(_name(old))}
    ) as span:
        await _admit_decision(runtime, caller, action, after, old, patch, dryrun, span)


def _name(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name", ""))


async def _admit_decision(
    runtime: Runtime,
    caller: Identity,
    action: Action,
    after: Mapping[str, str],
    old: Mapping[str, Any],
    patch: kopf.Patch,
    dryrun: bool,
    span: trace.Span,
) -> None:
    """Authorize and audit one decision; on success swap the request for a decision record."""
    reason = after.get(ANN_REASON, "").strip()
    at = now()
    request = lifecycle.view(old)
    verdict = await authorize(runtime.kube, request, caller, action, reason, at)
    if not dryrun:
        try:
            await audit_attempt(runtime.audit, old, caller, action, Via.KUBECTL, verdict)
        except DecisionRefused as exc:  # the audit log is unavailable: fail closed
            raise kopf.AdmissionError(exc.message, code=503) from exc
    if not verdict.allowed:
        span.set_attribute(spans.ATTR_REFUSAL_REASON, verdict.code)
        raise kopf.AdmissionError(verdict.message, code=403)
    for key in (ANN_DECISION, ANN_REASON, ANN_CANCEL):
        if key in after:
            patch.metadata.annotations[key] = None
    if verdict.code != "duplicate":
        record = lifecycle.DecisionRecord(
            user=caller.user,
            groups=caller.groups,
            action=action,
            at=at,
            via=Via.KUBECTL,
            reason=reason,
        )
        patch.metadata.annotations[lifecycle.record_key(caller.user)] = record.to_annotation()


@kopf.on.validate(
    GROUP,
    VERSION,
    PLURAL,
    id=VALIDATE_ID,
    operations=["CREATE", "UPDATE"],
    side_effects=False,
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
    """After mutation, a caller may have changed exactly one operator-owned annotation: their own
    decision record (or, on CREATE, the requested-by stamp naming them). Anything else is forged."""
    runtime: Runtime = memo["runtime"]
    caller = identity_of(userinfo)
    if runtime.is_operator(caller):
        return
    before, after = owned(annotations_of(old)), owned(annotations_of(new))
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    allowed = {lifecycle.record_key(caller.user)} if operation == "UPDATE" else {ANN_REQUESTED_BY}
    for key in changed - allowed:
        forged = kopf.AdmissionError(f"annotation {key} is written by Greenlight only", code=403)
        await refuse(runtime, old or new, caller, "forged_annotation", forged, dryrun=dryrun)
    for key in changed & allowed:
        value = after.get(key, "")
        try:
            author = json.loads(value).get("user") if value else None
        except ValueError:
            author = None
        if author != caller.user:
            forged = kopf.AdmissionError(f"annotation {key} does not name the caller", code=403)
            await refuse(runtime, old or new, caller, "forged_annotation", forged, dryrun=dryrun)


@kopf.on.validate(
    GROUP,
    VERSION,
    PLURAL,
    id=STATUS_ID,
    operations=["UPDATE"],
    subresource="status",
    side_effects=False,
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
    runtime: Runtime = memo["runtime"]
    caller = identity_of(userinfo)
    if not runtime.is_operator(caller):
        forged = kopf.AdmissionError(
            "status of an ApprovalRequest is written by Greenlight only; "
            f"to decide, use {ANN_DECISION}=approve|deny",
            code=403,
        )
        await refuse(runtime, old, caller, "forged_annotation", forged, dryrun=dryrun)
