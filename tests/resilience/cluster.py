"""The API calls the resilience tests make, retried the way a real client must retry them.

While the operator is down, its admission webhooks fail closed: creates and decisions are refused
with an HTTP 500 "failed calling webhook". A client (an orchestrator, kubectl in a retry loop)
tries again; a write that the API server accepted is never repeated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.support.operator import OperatorProcess

from greenlight.core.model import GROUP, KIND, PLURAL, VERSION
from greenlight.devcluster import ControlPlane

T = TypeVar("T")
TERMINAL = ("Approved", "Denied", "Expired", "Cancelled")


def manifest(name: str, *, approvals: int = 1, timeout: str = "1h") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "action": "pulumi destroy",
            "target": "staging",
            "requester": {"workflowId": "wf-resilience", "taskId": name},
            "timeout": timeout,
            "policy": {"requiredApprovals": approvals},
        },
    }


def retried(call: Callable[[], T], *, within: float = 90.0) -> T:
    """`call()` until the API server accepts it; webhook and connection failures are retried."""
    deadline = time.monotonic() + within
    while True:
        try:
            return call()
        except ApiException as exc:
            # 403 from RBAC (not from the webhook): a restarted API server denies until its
            # authorizer has loaded the RoleBindings again.
            rbac_warming = (
                exc.status == 403
                and "cannot" in str(exc.body)
                and ("admission webhook" not in str(exc.body))
            )
            retryable = exc.status in (0, 500, 502, 503, 504) or rbac_warming
            if not retryable or time.monotonic() > deadline:
                raise
        except OSError:  # the API server itself is restarting
            if time.monotonic() > deadline:
                raise
        except Exception as exc:  # urllib3's protocol errors while the server restarts
            if "urllib3" not in type(exc).__module__ or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@dataclass
class Requests:
    """ApprovalRequests in one namespace, as one user (impersonated by the admin)."""

    plane: ControlPlane
    namespace: str
    user: str | None = None

    def __post_init__(self) -> None:
        api_client = self.plane.api_client()
        if self.user is not None:
            api_client.set_default_header("Impersonate-User", self.user)
        self.api = client.CustomObjectsApi(api_client)

    def create(self, body: Mapping[str, Any]) -> None:
        """Create once: a retry that finds the object already there means the first one won."""

        def attempt() -> None:
            try:
                self.api.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, dict(body)
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise

        retried(attempt)

    def annotate(self, name: str, annotations: Mapping[str, str]) -> None:
        """What `kubectl annotate` does: a merge patch of metadata.annotations."""
        retried(
            lambda: self.api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                {"metadata": {"annotations": dict(annotations)}},
            )
        )

    def get(self, name: str) -> dict[str, Any]:
        obj = retried(
            lambda: self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        )
        return cast("dict[str, Any]", obj)

    def all(self) -> dict[str, dict[str, Any]]:
        listing = cast(
            "dict[str, Any]",
            retried(
                lambda: self.api.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL
                )
            ),
        )
        return {obj["metadata"]["name"]: obj for obj in listing["items"]}

    def wait(
        self, names: list[str], done: Callable[[dict[str, Any]], bool], *, within: float
    ) -> dict[str, dict[str, Any]]:
        """Wait until `done(obj)` holds for every named object; the last listing is returned."""
        deadline = time.monotonic() + within
        while True:
            objects = self.all()
            missing = [n for n in names if n not in objects or not done(objects[n])]
            if not missing:
                return objects
            if time.monotonic() > deadline:
                sample = {n: (objects.get(n) or {}).get("status") for n in missing[:3]}
                raise AssertionError(
                    f"{len(missing)} of {len(names)} never got there, e.g. {sample}"
                )
            time.sleep(0.5)


def phase(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase", ""))


def settled(obj: Mapping[str, Any]) -> bool:
    """Terminal, and its notification (if it got one) updated to say so: nothing is left to do.

    A request decided before the operator got to announce it is never announced."""
    entries = (obj.get("status") or {}).get("notifications") or []
    return phase(obj) in TERMINAL and all(e.get("state") == "resolved" for e in entries)


def notified(obj: Mapping[str, Any]) -> bool:
    return phase(obj) == "Pending" and bool((obj.get("status") or {}).get("notifications"))


def audit_by_uid(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """uid -> event -> how many records of that event the log holds for it."""
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        uid = (record.get("request") or {}).get("uid")
        if uid:
            events = counts.setdefault(str(uid), {})
            events[record["event"]] = events.get(record["event"], 0) + 1
    return counts


def verify_audit(audit_file: Path, key_file: Path) -> subprocess.CompletedProcess[str]:
    """`greenlight audit verify FILE --key-file KEY`, as an auditor runs it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "greenlight",
            "audit",
            "verify",
            str(audit_file),
            "--key-file",
            str(key_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def terminal_records(events: Mapping[str, int]) -> int:
    return sum(events.get(e, 0) for e in ("decided", "expired", "cancelled"))


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:2000]


@pytest.fixture
def without_shared_operator(operator_process: OperatorProcess) -> None:
    """For tests that run their own operator processes: the session's operator must not
    reconcile the same objects meanwhile. It is stopped now; the `operator` fixture starts it
    again (re-pointing the webhooks at itself) for whichever test needs it next."""
    operator_process.kill()
