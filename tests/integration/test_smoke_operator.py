"""A first end-to-end check that the operator process serves the lifecycle."""

from __future__ import annotations

import json

from tests.support.kubectl import Kubectl
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People


def test_request_approved_through_kubectl_annotate(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    manifest = {
        "apiVersion": "greenlight.dev/v1alpha1",
        "kind": "ApprovalRequest",
        "metadata": {"name": "smoke", "namespace": people.namespace},
        "spec": {"action": "pulumi destroy", "target": "prod", "requester": {"workflowId": "wf-1"}},
    }
    kubectl("apply", "-f", "-", input=json.dumps(manifest), as_user=people.orchestrator)
    kubectl(
        "-n",
        people.namespace,
        "wait",
        "apr/smoke",
        "--for=jsonpath={.status.phase}=Pending",
        "--timeout=20s",
    )
    kubectl(
        "-n",
        people.namespace,
        "annotate",
        "apr/smoke",
        "greenlight.dev/decision=approve",
        as_user=people.alice,
    )
    kubectl(
        "-n",
        people.namespace,
        "wait",
        "apr/smoke",
        "--for=jsonpath={.status.phase}=Approved",
        "--timeout=20s",
    )
    status = json.loads(kubectl("-n", people.namespace, "get", "apr/smoke", "-o", "json").stdout)[
        "status"
    ]
    assert status["requestedBy"] == people.orchestrator
    assert status["decision"]["by"] == "alice"
