"""The console notifier: the embedded default when no Slack is configured.

For a log pipeline it logs the request and the exact commands that decide it as one structured
line ("approval requested"), and the outcome when the request is resolved. For a person at a
terminal (given a `stream`: `make run` on a TTY) it prints a block instead: what, where, who
asked, Greenlight's own counts of a machine-readable plan and what it destroys, the
requester's summary (labelled as theirs), the plan's first lines, when it expires, and the
commands to approve or deny.
Its "delivery" cannot fail, so its reference is empty.
"""

from __future__ import annotations

from typing import TextIO

import structlog

from greenlight.adapters.notifiers import FollowUp, NotificationRef
from greenlight.core.model import RequestView
from greenlight.core.plans import PlanReading
from greenlight.core.timefmt import format_time

_log = structlog.get_logger("greenlight.notify.console")
PLAN_LINES = 10
DESTROYED_LINES = 20


def commands(request: RequestView) -> dict[str, str]:
    """The commands that decide `request`, by what they do."""
    ns = f" -n {request.namespace}"
    return {
        "approve": f"greenlight approve {request.name}{ns}",
        "deny": f"greenlight deny {request.name}{ns} --reason '<why>'",
        "kubectl_approve": (
            f"kubectl annotate apr {request.name}{ns} greenlight.dev/decision=approve"
        ),
        "kubectl_deny": (
            f"kubectl annotate apr {request.name}{ns} greenlight.dev/decision=deny "
            "greenlight.dev/reason='<why>'"
        ),
    }


def block(request: RequestView) -> str:
    """The request as a person reads it on a terminal."""
    asked = request.requested_by or "(unknown)"
    if request.on_behalf_of:
        asked += f", on behalf of {request.on_behalf_of}"
    if request.workflow_id:
        asked += f" (workflow {request.workflow_id}"
        asked += f", task {request.task_id})" if request.task_id else ")"
    expires = format_time(request.expires_at) if request.expires_at else "never"
    plan = request.plan_preview.splitlines()
    shown = [f"    {line}" for line in plan[:PLAN_LINES]]
    if len(plan) > PLAN_LINES:
        shown.append(f"    ... ({len(plan) - PLAN_LINES} more lines)")
    decide = commands(request)
    approvals = request.required_approvals
    lines = [
        "",
        f"== Approval requested: {request.namespace}/{request.name} ==",
        f"  Action:    {request.action}",
        f"  Target:    {request.target}",
        f"  Asked by:  {asked}",
        f"  Needs:     {approvals} approval{'s' if approvals != 1 else ''}",
        f"  Expires:   {expires}",
    ]
    lines += _reading(request.plan_reading)
    if request.plan_summary:
        lines.append(f"  Summary:   {request.plan_summary}  (in the requester's words)")
    if shown:
        lines += ["  Plan:", *shown]
    lines += [
        f"  Digest:    {request.plan_digest}",
        "  Approve:   " + decide["approve"],
        "             " + decide["kubectl_approve"],
        "  Deny:      " + decide["deny"],
        "             " + decide["kubectl_deny"],
        "",
    ]
    return "\n".join(lines) + "\n"


def _reading(reading: PlanReading | None) -> list[str]:
    """Greenlight's own counts and the resources the plan destroys (core/plans.py)."""
    if reading is None:
        return []
    lines = [
        f"  Changes:   {reading.headline()}  (Greenlight's reading of the {reading.format} plan)"
    ]
    shown = list(reading.destroyed[:DESTROYED_LINES])
    if reading.destroys > len(shown):
        shown.append(f"... and {reading.destroys - len(shown)} more")
    for n, name in enumerate(shown):
        lines.append(("  Destroys:  " if n == 0 else " " * 13) + name)
    return lines


class ConsoleNotifier:
    name = "console"
    immediate = True

    def __init__(self, stream: TextIO | None = None) -> None:
        """With `stream`, print blocks for people to it; without, log structured lines."""
        self._stream = stream

    def channels(self, request: RequestView) -> tuple[str, ...]:
        return ("console",)

    async def notify(
        self, request: RequestView, channel: str | None = None, *, fresh: bool = False
    ) -> NotificationRef:
        if self._stream is not None:
            self._stream.write(block(request))
            self._stream.flush()
            return NotificationRef(channel="console", ref="")
        _log.info(
            "approval requested",
            namespace=request.namespace,
            name=request.name,
            action=request.action,
            target=request.target,
            requested_by=request.requested_by,
            plan=request.plan_reading.to_json() if request.plan_reading else None,
            plan_summary=request.plan_summary,
            plan_digest=request.plan_digest,
            required_approvals=request.required_approvals,
            expires_at=format_time(request.expires_at) if request.expires_at else None,
            **commands(request),
        )
        return NotificationRef(channel="console", ref="")

    async def resolve(self, request: RequestView, ref: NotificationRef) -> None:
        decision = request.decision
        _log.info(
            "approval resolved",
            namespace=request.namespace,
            name=request.name,
            outcome=request.phase.value,
            by=decision.by if decision else None,
            via=decision.via.value if decision else None,
            reason=decision.reason if decision else None,
        )

    async def remind(self, request: RequestView, ref: NotificationRef, note: FollowUp) -> None:
        _log.info(
            "approval still pending",
            namespace=request.namespace,
            name=request.name,
            note=note.text,
            follow_up=note.key,
            **commands(request),
        )
