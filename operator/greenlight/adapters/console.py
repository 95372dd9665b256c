"""The console notifier: the embedded default when no Slack is configured.

It logs the request and the exact commands that decide it, and logs the outcome when the request
is resolved. Its "delivery" cannot fail, so its reference is empty.
"""

from __future__ import annotations

import structlog

from greenlight.adapters.notifiers import NotificationRef
from greenlight.core.model import RequestView
from greenlight.core.timefmt import format_time

_log = structlog.get_logger("greenlight.notify.console")


class ConsoleNotifier:
    name = "console"

    async def notify(self, request: RequestView) -> NotificationRef:
        ns = f" -n {request.namespace}"
        _log.info(
            "approval requested",
            namespace=request.namespace,
            name=request.name,
            action=request.action,
            target=request.target,
            requested_by=request.requested_by,
            plan_summary=request.plan_summary,
            plan_digest=request.plan_digest,
            required_approvals=request.required_approvals,
            expires_at=format_time(request.expires_at) if request.expires_at else None,
            approve=f"greenlight approve {request.name}{ns}",
            deny=f"greenlight deny {request.name}{ns} --reason '<why>'",
            kubectl_approve=(
                f"kubectl annotate apr {request.name}{ns} greenlight.dev/decision=approve"
            ),
            kubectl_deny=(
                f"kubectl annotate apr {request.name}{ns} greenlight.dev/decision=deny "
                "greenlight.dev/reason='<why>'"
            ),
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
