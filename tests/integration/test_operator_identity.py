"""The operator always has its own identity: `make run` and the test harness give it a
ServiceAccount with the chart's RBAC, or refuse, saying why, to run it with a person's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests.support.identities import user_kubeconfig
from tests.support.kubectl import Kubectl
from tests.support.operator import REPO, OperatorProcess

from greenlight.devcluster import ControlPlane, kubectl_binary
from greenlight.devcluster.identity import IdentityError, ensure_operator_identity


def as_kubeconfig(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    return subprocess.run(
        [str(kubectl_binary()), *args], capture_output=True, text=True, env=env, check=False
    )


def test_the_operator_runs_as_its_own_service_account_with_the_charts_rights(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    identity = ensure_operator_identity(str(control_plane.kubeconfig), REPO, tmp_path)

    whoami = as_kubeconfig(
        identity.kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"
    )
    assert (
        whoami.stdout == identity.user == "system:serviceaccount:greenlight-system:greenlight-dev"
    )
    can = as_kubeconfig(
        identity.kubeconfig, "auth", "can-i", "patch", "approvalrequests/status", "-A"
    )
    assert can.stdout.strip() == "yes"
    cannot = as_kubeconfig(identity.kubeconfig, "auth", "can-i", "get", "secrets", "-A")
    assert cannot.stdout.strip() == "no"
    assert identity.kubeconfig.stat().st_mode & 0o077 == 0


def test_without_the_rights_to_create_it_the_identity_is_refused_with_the_reason(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    mallory = user_kubeconfig(control_plane, tmp_path, "mallory")

    with pytest.raises(
        IdentityError, match="cannot create the operator's ServiceAccount"
    ) as refused:
        ensure_operator_identity(str(mallory), REPO, tmp_path / "identity")

    assert "forbidden" in str(refused.value).lower()
    assert not (tmp_path / "identity" / "operator-sa.kubeconfig").exists()


def test_the_test_operator_skips_only_its_own_service_account(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    config = kubectl.json("get", "mutatingwebhookconfiguration", "greenlight.dev")

    expressions = {
        condition["expression"]
        for hook in config["webhooks"]
        for condition in hook["matchConditions"]
    }
    user = "system:serviceaccount:greenlight-system:greenlight-dev"
    assert expressions == {f"request.userInfo.username != '{user}'"}
