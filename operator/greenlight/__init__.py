"""Greenlight: a Kubernetes-native human approval gate for automation.

The public SDK for orchestrators:

- `ApprovalClient` creates ApprovalRequests (carrying the caller's trace context) and waits for
  a person's answer (`Outcome`, with `Phase` and the CLI's exit code);
- `Workflow` and `task` instrument the orchestrator's own work (metrics, logs, traces), and
  `Workflow.awaiting_approval()` marks the pause while a person decides.

Everything else (the operator's core, adapters and telemetry) is internal.
"""

from greenlight.agent import Status, Workflow, task
from greenlight.client import ApprovalClient, GreenlightError, Outcome
from greenlight.core.model import Phase

__all__ = [
    "ApprovalClient",
    "GreenlightError",
    "Outcome",
    "Phase",
    "Status",
    "Workflow",
    "task",
]
