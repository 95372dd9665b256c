"""ApprovalRequests as the end-to-end tests handle them: created by the orchestrator with
kubectl, decided with kubectl annotate, and watched until their status says what a test expects.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from tests.support.kubectl import Kubectl
from tests.support.manifests import approval_request, create, get, poll
from tests.support.operator_fixtures import People


class Requests:
    """Creating ApprovalRequests as the orchestrator and reading them back."""

    def __init__(self, kubectl: Kubectl, people: People) -> None:
        self.kubectl = kubectl
        self.people = people
        self.namespace = people.namespace

    def create(self, name: str, annotations: dict[str, str] | None = None, **spec: Any) -> str:
        """Create the request as the orchestrator; returns its uid once the operator saw it."""
        workflow = f"wf-{name}-{secrets.token_hex(3)}"
        spec.setdefault("requester", {"workflowId": workflow, "taskId": "task-approve"})
        manifest = approval_request(name, self.namespace, **spec)
        if annotations:
            manifest["metadata"]["annotations"] = annotations
        create(self.kubectl, manifest, as_user=self.people.orchestrator)
        obj = poll(lambda: (o := self.get(name)).get("status", {}).get("phase") and o, timeout=20)
        return str(obj["metadata"]["uid"])

    def get(self, name: str) -> dict[str, Any]:
        return get(self.kubectl, self.namespace, name)

    def status_of(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def wait(self, name: str, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until `predicate(status)` holds; fail with the last status otherwise."""
        last: dict[str, Any] = {}

        def check() -> bool:
            last.clear()
            last.update(self.status_of(name))
            return bool(predicate(last))

        try:
            poll(check, timeout, interval=0.2)
        except AssertionError:
            raise AssertionError(
                f"{self.namespace}/{name} status never matched: {json.dumps(last)}"
            ) from None
        return dict(last)

    def phase(self, name: str, phase: str, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait(name, lambda s: s.get("phase") == phase, timeout)

    def notified(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        """The status once `status.notifications` records the Slack message."""
        return self.wait(name, lambda s: bool(s.get("notifications")), timeout)

    def annotate(self, name: str, *annotations: str, as_user: str) -> None:
        done = self.kubectl(
            "-n", self.namespace, "annotate", f"apr/{name}", *annotations, as_user=as_user
        )
        assert done.returncode == 0, done.stderr
