"""Span and attribute names: the trace contract that Tempo queries and docs/telemetry.md use.

Operator spans are named `greenlight.<noun>.<verb>`; calls to other systems are named after
the system and the call (`slack chat.postMessage`, `k8s patch approvalrequests/status`).
Attribute keys are namespaced `greenlight.*`; values are never secrets.
"""

from __future__ import annotations

# Operator: one span per handled event of an ApprovalRequest.
REQUEST_CREATE = "greenlight.request.create"  # continues the orchestrator's trace
REQUEST_DECIDE = "greenlight.request.decide"  # deferred: new trace, linked to the request's
REQUEST_EXPIRE = "greenlight.request.expire"  # deferred: new trace, linked
REQUEST_CANCEL = "greenlight.request.cancel"  # deferred: new trace, linked
ADMISSION = "greenlight.admission"  # one admission review (identity, authorization)
NOTIFY = "greenlight.notify"  # announce a pending request on a channel
NOTIFY_RESOLVE = "greenlight.notify.resolve"  # show the outcome on the announced message
AUDIT_WRITE = "greenlight.audit.write"
# The approved action, from its claim to its reported finish; continues the request's trace.
EXECUTION = "greenlight.execution"

# Agent SDK (greenlight.agent).
WORKFLOW_PREFIX = "workflow "  # + workflow name: the root span of a workflow run
TASK_PREFIX = "task "  # + task name: child of the workflow span
EVENT_APPROVAL_WAITING = "greenlight.approval.waiting"
EVENT_APPROVAL_RESUMED = "greenlight.approval.resumed"

# Attributes.
ATTR_REQUEST_NAME = "greenlight.request.name"
ATTR_REQUEST_NAMESPACE = "greenlight.request.namespace"
ATTR_REQUEST_UID = "greenlight.request.uid"
ATTR_WORKFLOW_NAME = "greenlight.workflow.name"
ATTR_WORKFLOW_ID = "greenlight.workflow.id"
ATTR_TASK_NAME = "greenlight.task.name"
ATTR_TASK_ID = "greenlight.task.id"
ATTR_TASK_TIMEOUT = "greenlight.task.timeout_seconds"
ATTR_STATUS = "greenlight.status"
ATTR_OUTCOME = "greenlight.decision.outcome"
ATTR_VIA = "greenlight.decision.via"
ATTR_REFUSAL_REASON = "greenlight.refusal.reason"
ATTR_CHANNEL = "greenlight.notify.channel"
ATTR_EXECUTION_EXIT_CODE = "greenlight.execution.exit_code"
ATTR_EXECUTION_CLAIMED_BY = "greenlight.execution.claimed_by"
ATTR_APPROVAL_REQUEST = "greenlight.approval.request"
ATTR_APPROVAL_OUTCOME = "greenlight.approval.outcome"
ATTR_APPROVAL_WAITED = "greenlight.approval.waited_seconds"
