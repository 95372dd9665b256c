"""The Greenlight dashboards, one function each; ``build.py`` renders them to ``dashboards/``.

Every Prometheus query names only metrics of the telemetry contract (``greenlight_*``) or the
series kube-prometheus-stack, the blackbox exporter, Qdrant and the Redis exporter expose.
Logs are selected by ``namespace`` and the pod label ``app`` (app.kubernetes.io/name of the
chart's pods, ``greenlight``), as the Loki agents of the monitoring stack label them.
"""

from __future__ import annotations

from grafana import (
    JSON,
    Query,
    Row,
    Variable,
    dashboard,
    datasource_variable,
    log_rate,
    logs,
    query_variable,
    stat,
    table,
    textbox_variable,
    timeseries,
    traces,
)

OPERATOR_LOGS = '{namespace="$namespace", app="greenlight"}'
OPERATOR_TRACES = '{ resource.service.name = "greenlight-operator" }'
NS = 'namespace="$namespace"'


def _select(metric: str, *matchers: str) -> str:
    """``metric{namespace="$namespace", matchers...}``: every panel is scoped to ``$namespace``."""
    return f"{metric}{{{', '.join((NS, *matchers))}}}"


def _common_variables(namespace_query: str) -> list[Variable]:
    return [
        datasource_variable("datasource", "prometheus", "Prometheus"),
        datasource_variable("loki", "loki", "Loki"),
        datasource_variable("tempo", "tempo", "Tempo"),
        query_variable("namespace", "Namespace", namespace_query),
    ]


def approvals() -> JSON:
    """Requests created, decided and pending, how long humans take, refused attempts, and
    what became of the approvals: receipts claimed, executions run, finished or not."""
    decided = _select("greenlight_requests_decided_total")
    approved = _select("greenlight_requests_decided_total", 'outcome="approved"')
    expired = _select("greenlight_requests_decided_total", 'outcome="expired"')
    duration = f"greenlight_decision_duration_seconds_bucket{{{NS}}}"
    refused = f"greenlight_decision_attempts_refused_total{{{NS}}}"
    start_delay = "greenlight_execution_start_delay_seconds"
    # 15 minutes is not a bucket bound (..., 300, 600, 1800, ...): "late" is past 10 minutes.
    # Prometheus 2 keeps the exposed "600.0", Prometheus 3 normalises it to "600".
    late_bound = 'le=~"600|600.0"'
    return dashboard(
        uid="greenlight-approvals",
        title="Greenlight / Approvals",
        description="Approval requests: created, decided, pending, decision time, refusals, "
        "receipts and executions.",
        variables=[
            *_common_variables("label_values(greenlight_requests_pending, namespace)"),
            textbox_variable("workflow_id", "Workflow id (logs)", ".+"),
        ],
        rows=[
            Row(
                "Now",
                [
                    stat(
                        "Pending requests",
                        "Requests waiting for a decision.",
                        Query(f"sum(greenlight_requests_pending{{{NS}}})", instant=True),
                        steps=[(None, "green"), (10, "orange")],
                    ),
                    stat(
                        "Oldest pending",
                        "Age of the oldest pending request; the alert fires past 4 hours.",
                        Query(
                            f"max(greenlight_oldest_pending_request_age_seconds{{{NS}}})",
                            instant=True,
                        ),
                        unit="s",
                        steps=[(None, "green"), (3600, "orange"), (14400, "red")],
                    ),
                    stat(
                        "Created (24h)",
                        "Requests created in the last 24 hours.",
                        Query(
                            f"sum(increase(greenlight_requests_created_total{{{NS}}}[24h]))",
                            instant=True,
                        ),
                    ),
                    stat(
                        "Approved (24h)",
                        "Share of the requests decided in the last 24 hours that were approved.",
                        Query(
                            f"sum(increase({approved}[24h])) / sum(increase({decided}[24h]))",
                            instant=True,
                        ),
                        unit="percentunit",
                        steps=[(None, "blue")],
                    ),
                    stat(
                        "Expired (24h)",
                        "Requests nobody decided before their timeout in the last 24 hours.",
                        Query(
                            f"sum(increase({expired}[24h]))",
                            instant=True,
                        ),
                        steps=[(None, "green"), (1, "orange")],
                    ),
                    stat(
                        "Refused attempts (24h)",
                        "Decision attempts refused by authorization or policy in 24 hours.",
                        Query(f"sum(increase({refused}[24h]))", instant=True),
                        steps=[(None, "green"), (1, "orange")],
                    ),
                ],
            ),
            Row(
                "Flow",
                [
                    timeseries(
                        "Created and decided",
                        "Requests created, and decisions by outcome, per second.",
                        [
                            Query(
                                "sum(rate(greenlight_requests_created_total"
                                f"{{{NS}}}[$__rate_interval]))",
                                "created",
                            ),
                            Query(
                                f"sum by (outcome) (rate({decided}[$__rate_interval]))",
                                "{{outcome}}",
                            ),
                        ],
                        unit="reqps",
                    ),
                    timeseries(
                        "Decisions by channel",
                        "Where decisions came from: Slack, kubectl/CLI, or expiry.",
                        [
                            Query(
                                f"sum by (via) (rate({decided}[$__rate_interval]))",
                                "{{via}}",
                            )
                        ],
                        unit="reqps",
                        stack=True,
                    ),
                    timeseries(
                        "Pending requests",
                        "Requests waiting, and the age of the oldest one.",
                        [
                            Query(f"sum(greenlight_requests_pending{{{NS}}})", "pending"),
                        ],
                    ),
                    timeseries(
                        "Oldest pending request age",
                        "The approvals-pending alert fires above the red line (4 hours).",
                        [
                            Query(
                                f"max(greenlight_oldest_pending_request_age_seconds{{{NS}}})",
                                "oldest",
                            )
                        ],
                        unit="s",
                        threshold=14400,
                    ),
                ],
            ),
            Row(
                "Decision time",
                [
                    timeseries(
                        "Time to decision (quantiles)",
                        "How long requests wait for a decision; exemplars link to traces.",
                        [
                            Query(
                                f"histogram_quantile({q}, sum by (le) "
                                f"(rate({duration}[$__rate_interval])))",
                                f"p{int(q * 100)}",
                                exemplar=True,
                            )
                            for q in (0.5, 0.9, 0.99)
                        ],
                        unit="s",
                    ),
                    timeseries(
                        "Median time to decision by outcome",
                        "Expired requests always take their full timeout.",
                        [
                            Query(
                                "histogram_quantile(0.5, sum by (outcome, le) "
                                f"(rate({duration}[$__rate_interval])))",
                                "{{outcome}}",
                            )
                        ],
                        unit="s",
                    ),
                ],
            ),
            Row(
                "Refused decision attempts",
                [
                    timeseries(
                        "Refused attempts by reason",
                        "Attempts refused by RBAC, policy, or Slack signature checks.",
                        [
                            Query(
                                f"sum by (reason) (rate({refused}[$__rate_interval]))",
                                "{{reason}}",
                            )
                        ],
                        unit="reqps",
                        stack=True,
                    ),
                    table(
                        "Refused attempts in the time range",
                        "Totals per reason; forged or replayed attempts deserve a look.",
                        Query(
                            f"sort_desc(sum by (reason) (increase({refused}[$__range])))",
                            instant=True,
                        ),
                        {"reason": "Reason", "Value": "Attempts"},
                        width=12,
                    ),
                ],
            ),
            Row(
                "Receipts and executions",
                [
                    stat(
                        "Approved but never executed",
                        "Receipts issued in the time range minus executions started "
                        "(`greenlight exec` claims) in it: approvals nobody ran, or ran without "
                        "claiming. Off by a few at the range's edges.",
                        Query(
                            "sum(increase(greenlight_receipts_issued_total"
                            f"{{{NS}}}[$__range])) - sum(increase("
                            f"greenlight_executions_started_total{{{NS}}}[$__range]))",
                            instant=True,
                        ),
                        steps=[(None, "green"), (1, "orange")],
                        width=6,
                    ),
                    stat(
                        "Started > 10 min after approval",
                        "Executions in the time range claimed more than 10 minutes after their "
                        "approval (the nearest bucket bound to 15 minutes).",
                        Query(
                            f"sum(increase({_select(start_delay + '_count')}[$__range])) - "
                            f"sum(increase({_select(start_delay + '_bucket', late_bound)}"
                            "[$__range]))",
                            instant=True,
                        ),
                        steps=[(None, "green"), (1, "orange")],
                        width=6,
                    ),
                    stat(
                        "Unfinished executions",
                        "Claimed executions with no finish reported: running, or their runner "
                        "died. Never re-run; the claimer closes them (docs/runbooks.md).",
                        Query(f"max(greenlight_executions_unfinished{{{NS}}})", instant=True),
                        steps=[(None, "green"), (1, "orange")],
                        width=6,
                    ),
                    stat(
                        "Oldest unfinished execution",
                        "Time since the oldest claim with no finish; the alert fires past 1 hour.",
                        Query(
                            f"max(greenlight_oldest_unfinished_execution_age_seconds{{{NS}}})",
                            instant=True,
                        ),
                        unit="s",
                        steps=[(None, "green"), (1800, "orange"), (3600, "red")],
                        width=6,
                    ),
                    timeseries(
                        "Executed long after approval",
                        "Time from the approval to the claim of its receipt (quantiles).",
                        [
                            Query(
                                f"histogram_quantile({q}, sum by (le) "
                                f"(rate({_select(start_delay + '_bucket')}[$__rate_interval])))",
                                f"p{int(q * 100)}",
                            )
                            for q in (0.5, 0.95)
                        ],
                        unit="s",
                    ),
                    timeseries(
                        "Oldest unfinished execution age",
                        "The unfinished-execution alert fires above the red line (1 hour).",
                        [
                            Query(
                                f"max(greenlight_oldest_unfinished_execution_age_seconds{{{NS}}})",
                                "oldest",
                            )
                        ],
                        unit="s",
                        threshold=3600,
                    ),
                    timeseries(
                        "Executions by result",
                        "Executions reported finished: success (exit 0), failure, or unknown "
                        "(closed by the claimer without an exit code).",
                        [
                            Query(
                                "sum by (result) (rate(greenlight_executions_total"
                                f"{{{NS}}}[$__rate_interval]))",
                                "{{result}}",
                            )
                        ],
                        unit="ops",
                        stack=True,
                    ),
                    timeseries(
                        "Claims by verification result",
                        "Receipt claims the admission webhook checked: valid, or why refused.",
                        [
                            Query(
                                "sum by (result) (rate(greenlight_receipt_verifications_total"
                                f"{{{NS}}}[$__rate_interval]))",
                                "{{result}}",
                            )
                        ],
                        unit="reqps",
                        stack=True,
                    ),
                ],
            ),
            Row(
                "Logs and traces",
                [
                    logs(
                        "Operator logs for a workflow",
                        "Set the workflow id variable to follow one workflow's requests.",
                        f'{OPERATOR_LOGS} | json | workflow_id=~"$workflow_id"',
                    ),
                    traces(
                        "Recent operator traces",
                        "Request handling, decisions and expiries.",
                        OPERATOR_TRACES,
                    ),
                ],
            ),
        ],
    )


def agent() -> JSON:
    """Workflow and task runs of the agent, and the tasks running past their deadline."""
    selector = f'{NS}, workflow=~"$workflow"'
    runs = f"greenlight_workflow_runs_total{{{selector}}}"
    failed_runs = f'greenlight_workflow_runs_total{{{selector}, status=~"failed|timed_out"}}'
    deadline = f"greenlight_task_deadline_timestamp_seconds{{{selector}}}"
    return dashboard(
        uid="greenlight-agent",
        title="Greenlight / Agent workflows",
        description="Workflow and task runs, durations, overdue tasks, approvals awaited.",
        variables=[
            *_common_variables("label_values(greenlight_workflow_runs_total, namespace)"),
            query_variable(
                "workflow",
                "Workflow",
                'label_values(greenlight_workflow_runs_total{namespace="$namespace"}, workflow)',
                multi=True,
                all_value=".*",
            ),
            textbox_variable("workflow_id", "Workflow id (logs)", ".+"),
        ],
        rows=[
            Row(
                "Now",
                [
                    stat(
                        "Running tasks",
                        "Tasks running right now.",
                        Query(f"sum(greenlight_tasks_running{{{selector}}})", instant=True),
                        width=6,
                    ),
                    stat(
                        "Awaiting approval",
                        "Workflows blocked on a Greenlight approval request.",
                        Query(
                            f"sum(greenlight_workflows_awaiting_approval{{{selector}}})",
                            instant=True,
                        ),
                        steps=[(None, "green"), (1, "blue")],
                        width=6,
                    ),
                    stat(
                        "Overdue tasks",
                        "Running tasks past their deadline (the task-stuck alert).",
                        Query(f"count(time() - {deadline} > 0) or vector(0)", instant=True),
                        steps=[(None, "green"), (1, "orange")],
                        width=6,
                    ),
                    stat(
                        "Failed runs (1h)",
                        "Share of workflow runs that failed or timed out in the last hour.",
                        Query(
                            f"sum(increase({failed_runs}[1h])) / sum(increase({runs}[1h]))",
                            instant=True,
                        ),
                        unit="percentunit",
                        steps=[(None, "green"), (0.1, "orange"), (0.25, "red")],
                        width=6,
                    ),
                ],
            ),
            Row(
                "Overdue tasks",
                [
                    table(
                        "Tasks past their deadline",
                        "One line per running task whose deadline has passed.",
                        Query(f"time() - {deadline} > 0", instant=True),
                        {
                            "workflow": "Workflow",
                            "workflow_id": "Workflow id",
                            "task": "Task",
                            "task_id": "Task id",
                            "Value": "Overdue by",
                        },
                        unit="s",
                        width=12,
                    ),
                    table(
                        "Running tasks and time left",
                        "Every running task with the time until its deadline.",
                        Query(f"{deadline} - time()", instant=True),
                        {
                            "workflow": "Workflow",
                            "workflow_id": "Workflow id",
                            "task": "Task",
                            "task_id": "Task id",
                            "Value": "Time left",
                        },
                        unit="s",
                        width=12,
                    ),
                ],
            ),
            Row(
                "Workflows",
                [
                    timeseries(
                        "Workflow runs by status",
                        "Finished workflow runs per second.",
                        [
                            Query(
                                f"sum by (status) (rate({runs}[$__rate_interval]))",
                                "{{status}}",
                            )
                        ],
                        unit="reqps",
                        stack=True,
                    ),
                    timeseries(
                        "Failure ratio by workflow (10m)",
                        "Failed or timed-out share; the alert fires above 25% with 4+ runs.",
                        [
                            Query(
                                f"sum by (workflow) (rate({failed_runs}[10m]))"
                                f" / sum by (workflow) (rate({runs}[10m]))",
                                "{{workflow}}",
                            )
                        ],
                        unit="percentunit",
                        threshold=0.25,
                    ),
                    timeseries(
                        "Workflow duration p90",
                        "90th percentile of run duration per workflow.",
                        [
                            Query(
                                "histogram_quantile(0.9, sum by (workflow, le) (rate("
                                "greenlight_workflow_duration_seconds_bucket"
                                f"{{{selector}}}[$__rate_interval])))",
                                "{{workflow}}",
                            )
                        ],
                        unit="s",
                    ),
                    timeseries(
                        "Workflows awaiting approval",
                        "Workflows blocked on a human decision.",
                        [
                            Query(
                                "sum by (workflow) (greenlight_workflows_awaiting_approval"
                                f"{{{selector}}})",
                                "{{workflow}}",
                            )
                        ],
                    ),
                ],
            ),
            Row(
                "Tasks",
                [
                    timeseries(
                        "Task runs by status",
                        "Finished task runs per second.",
                        [
                            Query(
                                "sum by (task, status) (rate(greenlight_task_runs_total"
                                f"{{{selector}}}[$__rate_interval]))",
                                "{{task}} {{status}}",
                            )
                        ],
                        unit="reqps",
                    ),
                    timeseries(
                        "Task duration p90",
                        "90th percentile of run duration per task.",
                        [
                            Query(
                                "histogram_quantile(0.9, sum by (task, le) (rate("
                                "greenlight_task_duration_seconds_bucket"
                                f"{{{selector}}}[$__rate_interval])))",
                                "{{task}}",
                            )
                        ],
                        unit="s",
                    ),
                    timeseries(
                        "Running tasks",
                        "Tasks in progress per task name.",
                        [
                            Query(
                                f"sum by (task) (greenlight_tasks_running{{{selector}}})",
                                "{{task}}",
                            )
                        ],
                        stack=True,
                        width=24,
                    ),
                ],
            ),
            Row(
                "Logs and traces",
                [
                    logs(
                        "Logs of a workflow",
                        "Agent and operator log lines carrying the chosen workflow id.",
                        f'{{{NS}}} | json | workflow_id=~"$workflow_id"',
                    ),
                    traces(
                        "Recent workflow traces",
                        "Traces of the agent's workflows, approval waits included.",
                        '{ resource.service.name =~ "greenlight.*" }',
                    ),
                ],
            ),
        ],
    )


def external_services() -> JSON:
    """Health and latency of the services Greenlight and the agent call, Vault first."""
    up = f"greenlight_external_service_up{{{NS}}}"
    latency = f"greenlight_external_service_request_duration_seconds_bucket{{{NS}}}"
    return dashboard(
        uid="greenlight-external-services",
        title="Greenlight / External services",
        description="Vault, GitHub, Pulumi, Slack: health checks, probes and request latency.",
        variables=_common_variables(
            "label_values(greenlight_external_service_up, namespace)",
        ),
        rows=[
            Row(
                "Health",
                [
                    timeseries(
                        "Health check by service",
                        "1 = healthy, 0 = failing (vault pages, others warn after 5m).",
                        [Query(f"min by (service) ({up})", "{{service}}")],
                        width=12,
                    ),
                    timeseries(
                        "Vault blackbox probe",
                        "probe_success of the blackbox exporter's Vault probe.",
                        [
                            Query(
                                'min by (instance) (probe_success{job="blackbox-vault"})',
                                "{{instance}}",
                            )
                        ],
                        width=6,
                    ),
                    timeseries(
                        "Vault probe duration",
                        "Time the blackbox exporter took to reach Vault.",
                        [
                            Query(
                                'max by (instance) (probe_duration_seconds{job="blackbox-vault"})',
                                "{{instance}}",
                            )
                        ],
                        unit="s",
                        width=6,
                    ),
                ],
            ),
            Row(
                "Requests",
                [
                    timeseries(
                        "Requests by service",
                        "Calls to each external service per second.",
                        [
                            Query(
                                "sum by (service) (rate("
                                "greenlight_external_service_request_duration_seconds_count"
                                f"{{{NS}}}[$__rate_interval]))",
                                "{{service}}",
                            )
                        ],
                        unit="reqps",
                    ),
                    timeseries(
                        "Request latency p90 by service",
                        "90th percentile of the time each call took.",
                        [
                            Query(
                                "histogram_quantile(0.9, sum by (service, le) "
                                f"(rate({latency}[$__rate_interval])))",
                                "{{service}}",
                            )
                        ],
                        unit="s",
                    ),
                ],
            ),
            Row(
                "Logs",
                [
                    log_rate(
                        "Operator warnings and errors",
                        "Operator log lines at WARN or ERROR, per level.",
                        "sum by (level) (count_over_time("
                        f'{OPERATOR_LOGS} | json | level=~"WARN|ERROR" [$__interval]))',
                        "{{level}}",
                        width=24,
                    ),
                ],
            ),
        ],
    )


def operator() -> JSON:
    """Is the operator up, which version runs, can it notify people and write its audit log."""
    notifications = _select("greenlight_notifications_total")
    failed_notifications = _select("greenlight_notifications_total", 'result="failure"')
    return dashboard(
        uid="greenlight-operator",
        title="Greenlight / Operator",
        description="Operator health: scrape status, version, notifications, audit log, alerts.",
        variables=_common_variables("label_values(greenlight_build_info, namespace)"),
        rows=[
            Row(
                "Health",
                [
                    stat(
                        "Operator up",
                        "Targets of the greenlight-operator scrape job that are up.",
                        Query(
                            f'sum(up{{job="greenlight-operator", {NS}}}) or vector(0)',
                            instant=True,
                        ),
                        steps=[(None, "red"), (1, "green")],
                        width=6,
                    ),
                    stat(
                        "Audit write failures (1h)",
                        "Any failure pages: decisions stall until the audit log is writable.",
                        Query(
                            f"sum(increase(greenlight_audit_write_failures_total{{{NS}}}[1h]))",
                            instant=True,
                        ),
                        steps=[(None, "green"), (1, "red")],
                        width=6,
                    ),
                    table(
                        "Running versions",
                        "greenlight_build_info of every operator pod.",
                        Query(f"greenlight_build_info{{{NS}}}", instant=True),
                        {"pod": "Pod", "version": "Version", "python_version": "Python"},
                        width=12,
                        height=4,
                    ),
                    table(
                        "Firing Greenlight alerts",
                        "Alerts of the Greenlight rules that are firing now.",
                        Query(
                            'ALERTS{alertname=~"Greenlight.*", alertstate="firing"}',
                            instant=True,
                        ),
                        {
                            "alertname": "Alert",
                            "severity": "Severity",
                            "namespace": "Namespace",
                            "service": "Service",
                            "workflow": "Workflow",
                        },
                        height=6,
                    ),
                ],
            ),
            Row(
                "Notifications",
                [
                    timeseries(
                        "Notifications by channel and result",
                        "Notifications sent per second; failures mean approvers are not told.",
                        [
                            Query(
                                "sum by (channel, result) "
                                f"(rate({notifications}[$__rate_interval]))",
                                "{{channel}} {{result}}",
                            )
                        ],
                        unit="reqps",
                    ),
                    timeseries(
                        "Notification failure ratio (15m)",
                        "The notifications alert fires above 25% with 2+ failures.",
                        [
                            Query(
                                f"sum by (channel) (rate({failed_notifications}[15m]))"
                                f" / sum by (channel) (rate({notifications}[15m]))",
                                "{{channel}}",
                            )
                        ],
                        unit="percentunit",
                        threshold=0.25,
                    ),
                    timeseries(
                        "Notification latency p90",
                        "Time to deliver a notification, per channel.",
                        [
                            Query(
                                "histogram_quantile(0.9, sum by (channel, le) (rate("
                                "greenlight_notification_duration_seconds_bucket"
                                f"{{{NS}}}[$__rate_interval])))",
                                "{{channel}}",
                            )
                        ],
                        unit="s",
                    ),
                    timeseries(
                        "Audit write failures",
                        "Failed audit record writes per second.",
                        [
                            Query(
                                "sum(rate(greenlight_audit_write_failures_total"
                                f"{{{NS}}}[$__rate_interval]))",
                                "failures",
                            )
                        ],
                        unit="reqps",
                    ),
                ],
            ),
            Row(
                "Decision path",
                [
                    timeseries(
                        "Audit write latency p99",
                        "Time for a group of audit records to become durable (written and "
                        "fsynced). Every decision waits for it: a slow audit volume shows here "
                        "before writes fail.",
                        [
                            Query(
                                "histogram_quantile(0.99, sum by (le) (rate("
                                "greenlight_audit_write_duration_seconds_bucket"
                                f"{{{NS}}}[$__rate_interval])))",
                                "p99",
                            )
                        ],
                        unit="s",
                    ),
                    timeseries(
                        "Admission review latency p99",
                        "Time the operator takes to answer one AdmissionReview, per webhook "
                        "(a decision's SubjectAccessReview included). Above the webhooks' 10 s "
                        "timeout the API server refuses the write.",
                        [
                            Query(
                                "histogram_quantile(0.99, sum by (webhook, le) (rate("
                                "greenlight_admission_review_duration_seconds_bucket"
                                f"{{{NS}}}[$__rate_interval])))",
                                "{{webhook}}",
                            )
                        ],
                        unit="s",
                    ),
                ],
            ),
            Row(
                "Logs",
                [
                    log_rate(
                        "Log lines by level",
                        "Operator log volume per level.",
                        f"sum by (level) (count_over_time({OPERATOR_LOGS} | json [$__interval]))",
                        "{{level}}",
                        width=24,
                    ),
                    logs(
                        "Operator warnings and errors",
                        "Operator log lines at WARN or ERROR.",
                        f'{OPERATOR_LOGS} | json | level=~"WARN|ERROR"',
                    ),
                ],
            ),
        ],
    )


def sandbox() -> JSON:
    """CPU, memory and restarts of the sandbox namespace, and its Qdrant and Redis."""
    pods = f'{NS}, pod=~"$pod"'
    containers = f'{pods}, container!="", container!="POD"'
    return dashboard(
        uid="greenlight-sandbox",
        title="Greenlight / Sandbox resources",
        description="Resource use of a sandbox namespace and its managed Qdrant and Redis.",
        variables=[
            *_common_variables("label_values(kube_pod_info, namespace)"),
            query_variable(
                "pod",
                "Pod",
                'label_values(kube_pod_info{namespace="$namespace"}, pod)',
                multi=True,
                all_value=".*",
            ),
        ],
        rows=[
            Row(
                "Containers",
                [
                    timeseries(
                        "CPU by pod",
                        "CPU cores used (cAdvisor).",
                        [
                            Query(
                                "sum by (pod) (rate(container_cpu_usage_seconds_total"
                                f"{{{containers}}}[$__rate_interval]))",
                                "{{pod}}",
                            )
                        ],
                        unit="cores",
                        stack=True,
                    ),
                    timeseries(
                        "Memory by pod",
                        "Working set bytes (what the OOM killer looks at).",
                        [
                            Query(
                                "sum by (pod) (container_memory_working_set_bytes"
                                f"{{{containers}}})",
                                "{{pod}}",
                            )
                        ],
                        unit="bytes",
                        stack=True,
                    ),
                    timeseries(
                        "Memory against limit",
                        "Working set as a share of the memory limit, per container.",
                        [
                            Query(
                                "sum by (pod, container) (container_memory_working_set_bytes"
                                f"{{{containers}}}) / sum by (pod, container) "
                                "(kube_pod_container_resource_limits"
                                f'{{{pods}, resource="memory"}})',
                                "{{pod}}/{{container}}",
                            )
                        ],
                        unit="percentunit",
                        threshold=0.9,
                    ),
                    timeseries(
                        "Restarts",
                        "Container restarts per hour (kube-state-metrics).",
                        [
                            Query(
                                "sum by (pod, container) (increase("
                                f"kube_pod_container_status_restarts_total{{{pods}}}[1h]))",
                                "{{pod}}/{{container}}",
                            )
                        ],
                    ),
                    table(
                        "Restarts in the time range",
                        "Containers that restarted, most first.",
                        Query(
                            "sort_desc(sum by (pod, container) (increase("
                            f"kube_pod_container_status_restarts_total{{{pods}}}[$__range])) > 0)",
                            instant=True,
                        ),
                        {"pod": "Pod", "container": "Container", "Value": "Restarts"},
                    ),
                ],
            ),
            Row(
                "Qdrant",
                [
                    stat(
                        "Qdrant targets up",
                        "Qdrant pods Prometheus scrapes successfully.",
                        Query(f'sum(up{{{NS}, job=~".*qdrant.*"}}) or vector(0)', instant=True),
                        steps=[(None, "red"), (1, "green")],
                        width=6,
                    ),
                    table(
                        "Qdrant version",
                        "app_info of each Qdrant pod.",
                        Query(f"app_info{{{NS}}}", instant=True),
                        {"pod": "Pod", "name": "Name", "version": "Version"},
                        width=6,
                        height=4,
                    ),
                    timeseries(
                        "Collections and vectors",
                        "collections_total and collections_vector_total.",
                        [
                            Query(f"sum(collections_total{{{NS}}})", "collections"),
                            Query(f"sum(collections_vector_total{{{NS}}})", "vectors"),
                        ],
                        width=6,
                        height=4,
                    ),
                    timeseries(
                        "Qdrant REST requests",
                        "REST responses per second by endpoint.",
                        [
                            Query(
                                "sum by (endpoint) (rate(rest_responses_total"
                                f"{{{NS}}}[$__rate_interval]))",
                                "{{endpoint}}",
                            )
                        ],
                        unit="reqps",
                        width=6,
                        height=4,
                    ),
                ],
            ),
            Row(
                "Redis",
                [
                    stat(
                        "Redis up",
                        "redis_up of the Redis exporter.",
                        Query(f"min(redis_up{{{NS}}}) or vector(0)", instant=True),
                        steps=[(None, "red"), (1, "green")],
                        width=6,
                    ),
                    timeseries(
                        "Redis memory",
                        "redis_memory_used_bytes per instance.",
                        [Query(f"redis_memory_used_bytes{{{NS}}}", "{{pod}}")],
                        unit="bytes",
                        width=6,
                        height=4,
                    ),
                    timeseries(
                        "Redis clients",
                        "redis_connected_clients per instance.",
                        [Query(f"redis_connected_clients{{{NS}}}", "{{pod}}")],
                        width=6,
                        height=4,
                    ),
                    timeseries(
                        "Redis commands",
                        "Commands processed per second.",
                        [
                            Query(
                                "sum by (pod) (rate(redis_commands_processed_total"
                                f"{{{NS}}}[$__rate_interval]))",
                                "{{pod}}",
                            )
                        ],
                        unit="ops",
                        width=6,
                        height=4,
                    ),
                ],
            ),
            Row(
                "Logs",
                [
                    logs(
                        "Sandbox logs",
                        "Log lines of the selected pods.",
                        '{namespace="$namespace", pod=~"$pod"}',
                    ),
                ],
            ),
        ],
    )


DASHBOARDS = {
    "greenlight-approvals": approvals,
    "greenlight-agent": agent,
    "greenlight-external-services": external_services,
    "greenlight-operator": operator,
    "greenlight-sandbox": sandbox,
}
