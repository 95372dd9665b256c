"""The operator's Prometheus metrics: the objects handlers update, on their own registry.

Names, types, labels and label values are a contract (docs/telemetry.md): alert rules and
dashboards are written against them. Labels are bounded: every value a label can take is listed
here, and every labelled series exists at 0 from start-up so `rate()` and `increase()` see the
first event. Label values outside these lists are refused with `ValueError` by the helpers.

The objects live on `OPERATOR_REGISTRY`, not prometheus-client's global registry, so the
operator's `/metrics` shows exactly this contract, and the agent SDK (its own registry) or a test
never collides with it.
"""

from __future__ import annotations

import platform
from importlib import metadata

from prometheus_client import Counter, Gauge, Histogram

from greenlight.telemetry.exposition import ALL_INTERFACES, MetricsServer, Registry
from greenlight.telemetry.exposition import serve as _serve

OUTCOMES: tuple[str, ...] = ("approved", "denied", "expired", "cancelled")
VIAS: tuple[str, ...] = ("slack", "teams", "kubectl", "expiry", "policy")
CHANNELS: tuple[str, ...] = ("console", "slack", "teams")
RESULTS: tuple[str, ...] = ("success", "failure")
REFUSAL_REASONS: tuple[str, ...] = (
    "not_authorized",
    "not_in_approvers",
    "self_approval",
    "reason_required",
    "already_decided",
    "forged_annotation",
    "invalid_value",
    "invalid_signature",
    "stale_timestamp",
    "replayed",
    "invalid_token",
    "unknown_user",
    "untrusted_record",
    "unverified_request",
    "policy_refused",
    "foreign_tenant",
)
FOLLOW_UPS: tuple[str, ...] = ("reminder", "escalation")

# How long people take to decide: from half a minute to a day.
DECISION_BUCKETS: tuple[float, ...] = (
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    14400,
    28800,
    43200,
    86400,
)
# Round trips to Slack and to external services' status endpoints.
CALL_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Work on a decision's path inside the operator: an audit group commit (its fsyncs), one
# admission review. From half a millisecond (a fast local disk) to a second.
PATH_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
# The admission webhooks, by their handler id (the URL path they are served at).
WEBHOOKS: tuple[str, ...] = (
    "greenlight-admission-mutate",
    "greenlight-admission-validate",
    "greenlight-admission-status",
    "greenlight-admission-delete",
    "greenlight-policy-validate-cluster",
    "greenlight-policy-validate",
)

OPERATOR_REGISTRY = Registry()

REQUESTS_CREATED = Counter(
    "greenlight_requests_created_total",
    "ApprovalRequests the operator accepted (first seen Pending).",
    registry=OPERATOR_REGISTRY,
)
REQUESTS_DECIDED = Counter(
    "greenlight_requests_decided_total",
    "ApprovalRequests that reached a terminal phase, by outcome and by how it was reached.",
    ["outcome", "via"],
    registry=OPERATOR_REGISTRY,
)
DECISION_DURATION = Histogram(
    "greenlight_decision_duration_seconds",
    "Time from creation to the terminal phase; exemplars carry the request's trace_id.",
    ["outcome"],
    buckets=DECISION_BUCKETS,
    registry=OPERATOR_REGISTRY,
)
REQUESTS_PENDING = Gauge(
    "greenlight_requests_pending",
    "ApprovalRequests currently Pending.",
    registry=OPERATOR_REGISTRY,
)
OLDEST_PENDING_AGE = Gauge(
    "greenlight_oldest_pending_request_age_seconds",
    "Age of the oldest Pending ApprovalRequest; 0 when none is pending.",
    registry=OPERATOR_REGISTRY,
)
NOTIFICATIONS = Counter(
    "greenlight_notifications_total",
    "Notification deliveries (announce and resolve), by channel and result.",
    ["channel", "result"],
    registry=OPERATOR_REGISTRY,
)
NOTIFICATION_DURATION = Histogram(
    "greenlight_notification_duration_seconds",
    "Time one notification delivery took, successful or not.",
    ["channel"],
    buckets=CALL_BUCKETS,
    registry=OPERATOR_REGISTRY,
)
DECISION_ATTEMPTS_REFUSED = Counter(
    "greenlight_decision_attempts_refused_total",
    "Decision attempts (kubectl or Slack) that were refused, by reason.",
    ["reason"],
    registry=OPERATOR_REGISTRY,
)
AUDIT_WRITE_FAILURES = Counter(
    "greenlight_audit_write_failures_total",
    "Audit records that could not be written (the decision was then not reported).",
    registry=OPERATOR_REGISTRY,
)
AUDIT_WRITE_DURATION = Histogram(
    "greenlight_audit_write_duration_seconds",
    "Time one group of audit records took to become durable (written and fsynced, with the "
    "head), or to fail; nothing waiting on it is reported before.",
    buckets=PATH_BUCKETS,
    registry=OPERATOR_REGISTRY,
)
AUDIT_CHAIN_BROKEN = Gauge(
    "greenlight_audit_chain_broken",
    "1 when the audit log holds fewer records than its head file or anchor (the operator then "
    "records and decides nothing until an admin resets the chain), else 0.",
    registry=OPERATOR_REGISTRY,
)
ADMISSION_REVIEW_DURATION = Histogram(
    "greenlight_admission_review_duration_seconds",
    "Time the operator took to answer one AdmissionReview, from its body read to the answer "
    "built (a decision's SubjectAccessReview included), by webhook.",
    ["webhook"],
    buckets=PATH_BUCKETS,
    registry=OPERATOR_REGISTRY,
)
EXTERNAL_SERVICE_UP = Gauge(
    "greenlight_external_service_up",
    "1 when the last health check of the service answered as expected, else 0.",
    ["service"],
    registry=OPERATOR_REGISTRY,
)
EXTERNAL_SERVICE_DURATION = Histogram(
    "greenlight_external_service_request_duration_seconds",
    "Round trip of health checks that got an HTTP response, by service.",
    ["service"],
    buckets=CALL_BUCKETS,
    registry=OPERATOR_REGISTRY,
)
FOLLOW_UPS_SENT = Counter(
    "greenlight_follow_ups_total",
    "Reminders and escalation steps added to announcements of pending requests, by kind "
    "(reminder | escalation) and channel.",
    ["kind", "channel"],
    registry=OPERATOR_REGISTRY,
)
POLICY_EVALUATIONS = Counter(
    "greenlight_policy_evaluations_total",
    "Creates the admission webhook judged against the installed policies, by outcome "
    "(RequireApproval | AutoApprove | Refuse).",
    ["outcome"],
    registry=OPERATOR_REGISTRY,
)
POLICY_OUTCOMES: tuple[str, ...] = ("RequireApproval", "AutoApprove", "Refuse")
# Receipts and what was done with them (docs/receipts.md).
VERIFICATION_RESULTS: tuple[str, ...] = (
    "valid",
    "no_receipt",
    "not_requester",
    "already_claimed",
    "expired",
    "plan_mismatch",
    "untrusted_record",
)
EXECUTION_RESULTS: tuple[str, ...] = ("success", "failure", "unknown")
# How long approved actions run, and how long after the approval they start.
EXECUTION_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
RECEIPTS_ISSUED = Counter(
    "greenlight_receipts_issued_total",
    "Signed approval receipts issued (one per request that became Approved).",
    registry=OPERATOR_REGISTRY,
)
RECEIPT_VERIFICATIONS = Counter(
    "greenlight_receipt_verifications_total",
    "Claims of a receipt checked by the admission webhook, by result (valid, or why refused).",
    ["result"],
    registry=OPERATOR_REGISTRY,
)
EXECUTIONS_STARTED = Counter(
    "greenlight_executions_started_total",
    "Approved actions whose receipt was claimed (the command started).",
    registry=OPERATOR_REGISTRY,
)
EXECUTIONS = Counter(
    "greenlight_executions_total",
    "Approved actions reported finished, by result (success: exit 0; failure; unknown).",
    ["result"],
    registry=OPERATOR_REGISTRY,
)
EXECUTION_DURATION = Histogram(
    "greenlight_execution_duration_seconds",
    "From the claim to the reported finish of an approved action.",
    buckets=EXECUTION_BUCKETS,
    registry=OPERATOR_REGISTRY,
)
EXECUTION_START_DELAY = Histogram(
    "greenlight_execution_start_delay_seconds",
    "From the approval to the claim of its receipt (how long after approval actions run).",
    buckets=EXECUTION_BUCKETS,
    registry=OPERATOR_REGISTRY,
)
EXECUTIONS_UNFINISHED = Gauge(
    "greenlight_executions_unfinished",
    "Claimed executions with no finish reported (running, or their runner died).",
    registry=OPERATOR_REGISTRY,
)
OLDEST_UNFINISHED_EXECUTION_AGE = Gauge(
    "greenlight_oldest_unfinished_execution_age_seconds",
    "Time since the oldest claim with no finish reported; 0 when there is none.",
    registry=OPERATOR_REGISTRY,
)
BUILD_INFO = Gauge(
    "greenlight_build_info",
    "Always 1; labels say which Greenlight and Python are running.",
    ["version", "python_version"],
    registry=OPERATOR_REGISTRY,
)


def _version() -> str:
    try:
        return metadata.version("greenlight")
    except metadata.PackageNotFoundError:
        return "unknown"


def _initialise() -> None:
    """Create every labelled series at 0 (DESIGN §6: labelled series start at 0)."""
    for outcome in OUTCOMES:
        DECISION_DURATION.labels(outcome=outcome)
        for via in VIAS:
            REQUESTS_DECIDED.labels(outcome=outcome, via=via)
    for channel in CHANNELS:
        NOTIFICATION_DURATION.labels(channel=channel)
        for result in RESULTS:
            NOTIFICATIONS.labels(channel=channel, result=result)
    for reason in REFUSAL_REASONS:
        DECISION_ATTEMPTS_REFUSED.labels(reason=reason)
    for kind in FOLLOW_UPS:
        for channel in CHANNELS:
            FOLLOW_UPS_SENT.labels(kind=kind, channel=channel)
    for outcome in POLICY_OUTCOMES:
        POLICY_EVALUATIONS.labels(outcome=outcome)
    for result in VERIFICATION_RESULTS:
        RECEIPT_VERIFICATIONS.labels(result=result)
    for result in EXECUTION_RESULTS:
        EXECUTIONS.labels(result=result)
    for webhook in WEBHOOKS:
        ADMISSION_REVIEW_DURATION.labels(webhook=webhook)
    BUILD_INFO.labels(version=_version(), python_version=platform.python_version()).set(1)


_initialise()


def _check(label: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{label}={value!r} is not a known label value; use one of {allowed}")


def _exemplar(trace_id: str | None) -> dict[str, str] | None:
    return {"trace_id": trace_id} if trace_id else None


def observe_decision(outcome: str, via: str, seconds: float, trace_id: str | None) -> None:
    """Count a terminal request and observe how long it took, with its trace id as exemplar.

    `trace_id` is the 32-hex-digit id of the request's trace (from the `greenlight.dev/traceparent`
    annotation); None or "" records no exemplar.
    """
    _check("outcome", outcome, OUTCOMES)
    _check("via", via, VIAS)
    REQUESTS_DECIDED.labels(outcome=outcome, via=via).inc()
    DECISION_DURATION.labels(outcome=outcome).observe(max(seconds, 0.0), _exemplar(trace_id))


def observe_notification(
    channel: str, result: str, seconds: float, trace_id: str | None = None
) -> None:
    """Count one notification delivery and observe its latency (exemplar: its trace id)."""
    _check("channel", channel, CHANNELS)
    _check("result", result, RESULTS)
    NOTIFICATIONS.labels(channel=channel, result=result).inc()
    NOTIFICATION_DURATION.labels(channel=channel).observe(max(seconds, 0.0), _exemplar(trace_id))


def count_follow_up(kind: str, channel: str) -> None:
    """Count one reminder or escalation step delivered to one announcement."""
    _check("kind", kind, FOLLOW_UPS)
    _check("channel", channel, CHANNELS)
    FOLLOW_UPS_SENT.labels(kind=kind, channel=channel).inc()


def count_policy_evaluation(outcome: str) -> None:
    _check("outcome", outcome, POLICY_OUTCOMES)
    POLICY_EVALUATIONS.labels(outcome=outcome).inc()


def count_verification(result: str) -> None:
    """Count one claim checked by the admission webhook."""
    _check("result", result, VERIFICATION_RESULTS)
    RECEIPT_VERIFICATIONS.labels(result=result).inc()


def observe_execution(result: str, seconds: float) -> None:
    """Count one finished execution and observe how long it ran."""
    _check("result", result, EXECUTION_RESULTS)
    EXECUTIONS.labels(result=result).inc()
    EXECUTION_DURATION.observe(max(seconds, 0.0))


def observe_admission_review(webhook: str, seconds: float) -> None:
    """Observe how long the operator took to answer one AdmissionReview of `webhook`."""
    _check("webhook", webhook, WEBHOOKS)
    ADMISSION_REVIEW_DURATION.labels(webhook=webhook).observe(max(seconds, 0.0))


def refuse(reason: str) -> None:
    """Count one refused decision attempt."""
    _check("reason", reason, REFUSAL_REASONS)
    DECISION_ATTEMPTS_REFUSED.labels(reason=reason).inc()


def serve(port: int, host: str = ALL_INTERFACES) -> MetricsServer:
    """Serve the operator's metrics at /metrics; call the returned object to stop."""
    return _serve(OPERATOR_REGISTRY, port, host)
