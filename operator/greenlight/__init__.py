"""Greenlight: a Kubernetes-native human approval gate for automation.

The public SDK for orchestrators:

- `ApprovalClient` creates ApprovalRequests (carrying the caller's trace context) and waits for
  a person's answer (`Outcome`, with `Phase` and the CLI's exit code);
- `Workflow` and `task` instrument the orchestrator's own work (metrics, logs, traces), and
  `Workflow.awaiting_approval()` marks the pause while a person decides.

Everything else (the operator's core, adapters and telemetry) is internal.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from greenlight.agent import Status, Workflow, task
    from greenlight.client import ApprovalClient, GreenlightError, Outcome
    from greenlight.core.model import Phase

_HOMES = {
    "ApprovalClient": "greenlight.client",
    "GreenlightError": "greenlight.client",
    "Outcome": "greenlight.client",
    "Phase": "greenlight.core.model",
    "Status": "greenlight.agent",
    "Workflow": "greenlight.agent",
    "task": "greenlight.agent",
}


def __getattr__(name: str) -> Any:
    """The SDK's names, imported on first use (PEP 562): `greenlight operator` and the CLI's
    offline commands do not load the SDK's client and instrumentation."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'greenlight' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "ApprovalClient",
    "GreenlightError",
    "Outcome",
    "Phase",
    "Status",
    "Workflow",
    "task",
]
