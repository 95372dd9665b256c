"""ApprovalRequest manifests and the kubectl steps the integration tests repeat."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from typing import Any

from tests.support.kubectl import Kubectl


def approval_request(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A valid request; keyword arguments replace (or, when None, remove) top-level spec fields."""
    body: dict[str, Any] = {
        "action": "pulumi destroy",
        "target": "production",
        "requester": {"workflowId": "wf-1234", "taskId": "task-9"},
        "plan": {"summary": "-12 resources", "details": "- aws:s3:Bucket logs\n"},
        "timeout": "30m",
    }
    for key, value in spec.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = copy.deepcopy(value)
    return {
        "apiVersion": "greenlight.dev/v1alpha1",
        "kind": "ApprovalRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def create(kubectl: Kubectl, manifest: Mapping[str, Any], as_user: str | None = None) -> None:
    kubectl("create", "-f", "-", input=json.dumps(manifest), as_user=as_user)


def get(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kubectl.json("-n", namespace, "get", f"apr/{name}")
    return obj


def wait_phase(
    kubectl: Kubectl, namespace: str, name: str, phase: str, timeout: float = 20.0
) -> dict[str, Any]:
    """Wait until the request is in `phase`; return it. Fails with the status it last had."""
    done = kubectl(
        "-n",
        namespace,
        "wait",
        f"apr/{name}",
        f"--for=jsonpath={{.status.phase}}={phase}",
        f"--timeout={int(timeout)}s",
        check=False,
        timeout=timeout + 10,
    )
    obj = get(kubectl, namespace, name)
    assert done.returncode == 0, f"{name} is not {phase}: {json.dumps(obj.get('status'))}"
    return obj


def poll(predicate: Any, timeout: float, interval: float = 0.1) -> Any:
    """Call `predicate` until it returns something truthy; return that, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


def annotate(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    *annotations: str,
    as_user: str | None = None,
    as_groups: tuple[str, ...] = (),
) -> Any:
    """`kubectl annotate` as a user; returns the completed process (check its returncode)."""
    return kubectl(
        "-n",
        namespace,
        "annotate",
        f"apr/{name}",
        *annotations,
        as_user=as_user,
        as_groups=as_groups,
        check=False,
    )
