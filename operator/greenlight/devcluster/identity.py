"""The operator's own identity, wherever `make run` and the tests run it.

The admission webhooks skip the operator's own writes (`matchConditions` on its user name), so an
operator running with a person's credentials would exempt that person's creates and status writes
from every check. Before the operator starts, this module gives it an identity of its own, with
the permissions the chart grants it and no more:

1. the chart's ServiceAccount, ClusterRole and ClusterRoleBinding (rendered by helm with
   `webhook.manage=true`, release `greenlight-dev`, so an installed release is never touched),
   applied in namespace `greenlight-system`;
2. a token for that ServiceAccount from the TokenRequest API (`kubectl create token`);
3. a kubeconfig with the cluster of the caller's kubeconfig and that token.

`IdentityError` says why, when any step is refused (e.g. the person may not create
ClusterRoles): the operator is then not run at all.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from greenlight.devcluster.manifests import InstallError, install, kubectl_binary

NAMESPACE = "greenlight-system"
RELEASE = "greenlight-dev"
CHART = Path("helm") / "greenlight"
HELM_INSTALLER = Path("hack") / "helm" / "install.sh"
TOKEN_DURATION = "24h"
_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")


class IdentityError(RuntimeError):
    """The operator's ServiceAccount, its permissions or its token could not be set up."""


@dataclass(frozen=True)
class OperatorIdentity:
    """A kubeconfig for the operator's ServiceAccount, and the user name the API server sees."""

    kubeconfig: Path
    user: str


def operator_objects(root: Path) -> list[dict[str, Any]]:
    """The namespace, and the chart's ServiceAccount and RBAC for the operator."""
    helm = _helm(root)
    command = [
        str(helm),
        "template",
        RELEASE,
        str(root / CHART),
        "--namespace",
        NAMESPACE,
        "--set",
        "webhook.manage=true",
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ]
    rendered = _output(command, "render the operator's RBAC from the chart")
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc and doc.get("kind") in _KINDS]
    if sorted({obj["kind"] for obj in objects}) != sorted(_KINDS):
        raise IdentityError(f"the chart rendered no operator {', '.join(_KINDS)}")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    return [namespace, *objects]


def ensure_operator_identity(kubeconfig: str, root: Path, workdir: Path) -> OperatorIdentity:
    """Create (or update) the operator's ServiceAccount and RBAC with `kubeconfig`'s credentials,
    and write `workdir/operator-sa.kubeconfig` with a fresh token for it."""
    objects = operator_objects(root)
    account = next(obj for obj in objects if obj["kind"] == "ServiceAccount")["metadata"]["name"]
    workdir.mkdir(parents=True, exist_ok=True)
    manifest = workdir / "operator-identity.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    try:
        install(kubeconfig, [manifest])
    except InstallError as error:
        raise IdentityError(
            f"cannot create the operator's ServiceAccount and RBAC: {error}"
        ) from None
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    token = _output(
        [
            str(kubectl_binary()),
            "create",
            "token",
            account,
            "-n",
            NAMESPACE,
            f"--duration={TOKEN_DURATION}",
        ],
        "request a token for the operator's ServiceAccount",
        env,
    ).strip()
    view = json.loads(
        _output(
            [str(kubectl_binary()), "config", "view", "--minify", "--flatten", "-o", "json"],
            "read the cluster from your kubeconfig",
            env,
        )
    )
    cluster = view["clusters"][0]["cluster"]
    path = workdir / "operator-sa.kubeconfig"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "cluster", "cluster": cluster}],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": account, "context": {"cluster": "cluster", "user": account}}],
                "current-context": account,
            },
            handle,
        )
    return OperatorIdentity(path, f"system:serviceaccount:{NAMESPACE}:{account}")


def _helm(root: Path) -> Path:
    directory = _output(["bash", str(root / HELM_INSTALLER)], "build helm (hack/helm/install.sh)")
    return Path(directory.strip()) / "helm"


def _output(command: list[str], what: str, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=600, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise IdentityError(f"cannot {what}: {error}") from None
    if done.returncode != 0:
        raise IdentityError(f"cannot {what}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout
