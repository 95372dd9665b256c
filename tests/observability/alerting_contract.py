"""The telemetry contract the rules and dashboards are written against, as data.

Metric names and label sets come from the project's telemetry contract (DESIGN.md section 6);
the external set lists the series of the monitoring stack the dashboards may also use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """A metric of the contract: its type decides which sample names it exposes."""

    kind: str
    labels: frozenset[str] = frozenset()


def _metric(kind: str, *labels: str) -> Metric:
    return Metric(kind=kind, labels=frozenset(labels))


CONTRACT_METRICS: dict[str, Metric] = {
    "greenlight_requests_created_total": _metric("counter"),
    "greenlight_requests_decided_total": _metric("counter", "outcome", "via"),
    "greenlight_decision_duration_seconds": _metric("histogram", "outcome"),
    "greenlight_requests_pending": _metric("gauge"),
    "greenlight_oldest_pending_request_age_seconds": _metric("gauge"),
    "greenlight_notifications_total": _metric("counter", "channel", "result"),
    "greenlight_notification_duration_seconds": _metric("histogram", "channel"),
    "greenlight_decision_attempts_refused_total": _metric("counter", "reason"),
    "greenlight_audit_write_failures_total": _metric("counter"),
    "greenlight_audit_write_duration_seconds": _metric("histogram"),
    "greenlight_audit_chain_broken": _metric("gauge"),
    "greenlight_follow_ups_total": _metric("counter", "kind", "channel"),
    "greenlight_policy_evaluations_total": _metric("counter", "outcome"),
    "greenlight_receipts_issued_total": _metric("counter"),
    "greenlight_receipt_verifications_total": _metric("counter", "result"),
    "greenlight_executions_started_total": _metric("counter"),
    "greenlight_executions_total": _metric("counter", "result"),
    "greenlight_execution_duration_seconds": _metric("histogram"),
    "greenlight_execution_start_delay_seconds": _metric("histogram"),
    "greenlight_executions_unfinished": _metric("gauge"),
    "greenlight_oldest_unfinished_execution_age_seconds": _metric("gauge"),
    "greenlight_admission_review_duration_seconds": _metric("histogram", "webhook"),
    "greenlight_external_service_up": _metric("gauge", "service"),
    "greenlight_external_service_request_duration_seconds": _metric("histogram", "service"),
    "greenlight_build_info": _metric("gauge", "version", "python_version"),
    "greenlight_workflow_runs_total": _metric("counter", "workflow", "status"),
    "greenlight_workflow_duration_seconds": _metric("histogram", "workflow", "status"),
    "greenlight_task_runs_total": _metric("counter", "workflow", "task", "status"),
    "greenlight_task_duration_seconds": _metric("histogram", "workflow", "task", "status"),
    "greenlight_tasks_running": _metric("gauge", "workflow", "task"),
    "greenlight_task_deadline_timestamp_seconds": _metric(
        "gauge", "workflow", "task", "workflow_id", "task_id"
    ),
    "greenlight_workflows_awaiting_approval": _metric("gauge", "workflow"),
}

# Series of kube-prometheus-stack (Prometheus, cAdvisor, kube-state-metrics), the blackbox
# exporter, Qdrant's /metrics and the Redis exporter.
EXTERNAL_METRICS = frozenset(
    {
        "up",
        "ALERTS",
        "probe_success",
        "probe_duration_seconds",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "kube_pod_container_status_restarts_total",
        "kube_pod_container_resource_limits",
        "kube_pod_info",
        "app_info",
        "collections_total",
        "collections_vector_total",
        "rest_responses_total",
        "redis_up",
        "redis_memory_used_bytes",
        "redis_connected_clients",
        "redis_commands_processed_total",
    }
)

ALERT_SEVERITIES = {
    "GreenlightWorkflowFailureRateHigh": "critical",
    "GreenlightTaskStuck": "warning",
    "GreenlightExternalServiceUnhealthy": "warning",
    "GreenlightVaultUnreachable": "critical",
    "GreenlightOperatorDown": "critical",
    "GreenlightNotificationsFailing": "warning",
    "GreenlightAuditWritesFailing": "critical",
    "GreenlightAuditChainBroken": "critical",
    "GreenlightApprovalsPendingTooLong": "warning",
    "GreenlightExecutionUnfinished": "warning",
}

RUNBOOK_BASE = "https://github.com/greenlight-dev/greenlight/blob/main/docs/runbooks.md"

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def is_known_metric(name: str) -> bool:
    """True for a contract metric (histogram sample names included) or a known external one."""
    if name in CONTRACT_METRICS or name in EXTERNAL_METRICS:
        return True
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and CONTRACT_METRICS.get(base, Metric("")).kind == "histogram":
            return True
    return False
