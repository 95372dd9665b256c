"""Fixtures for tests that need the operator running, and users with real RBAC."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.support.kubectl import Kubectl
from tests.support.operator import OperatorProcess

from greenlight.devcluster import ControlPlane

ORCHESTRATOR = "orchestrator"


@pytest.fixture(scope="session")
def operator_process(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator for the session; tests that kill it leave it to `operator` to restart."""
    process = OperatorProcess(control_plane, tmp_path_factory.mktemp("operator"))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def operator(operator_process: OperatorProcess) -> OperatorProcess:
    """The running operator (restarted first if an earlier test stopped it or pointed the
    webhooks at another operator process)."""
    if not operator_process.running:
        operator_process.start()
    elif not operator_process.webhook_points_here():
        operator_process.restart()
    return operator_process


@dataclass(frozen=True)
class People:
    """Identities in one namespace: approvers alice and bob, mallory with no rights, the
    orchestrator service account (requester), and the cluster admin (system:masters)."""

    namespace: str
    alice: str = "alice"
    bob: str = "bob"
    carol: str = "carol"
    mallory: str = "mallory"

    @property
    def orchestrator(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{ORCHESTRATOR}"


@pytest.fixture
def people(namespace: str, kubectl: Kubectl) -> People:
    """RoleBindings: alice, bob and carol approve; the orchestrator SA requests; mallory may
    read and patch (so only Greenlight's own checks stand between her and a decision)."""
    kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "approvers",
        "--clusterrole=greenlight-approver",
        "--user=alice",
        "--user=bob",
        "--user=carol",
    )
    kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "requesters",
        "--clusterrole=greenlight-requester",
        f"--serviceaccount={namespace}:{ORCHESTRATOR}",
    )
    kubectl(
        "-n",
        namespace,
        "create",
        "role",
        "editor",
        "--verb=get,list,watch,patch,update",
        "--resource=approvalrequests.greenlight.dev",
    )
    kubectl("-n", namespace, "create", "rolebinding", "editors", "--role=editor", "--user=mallory")
    return People(namespace)
