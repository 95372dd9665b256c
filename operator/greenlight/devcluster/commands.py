"""``python -m greenlight.devcluster up|run``: a local cluster, and the ``make run`` entry point.

``up`` keeps a control plane in the foreground for people who run the operator themselves.
``run`` is what ``make run`` calls: it uses the cluster the developer already has configured
when it answers, otherwise starts the local control plane, installs the CRD and ClusterRoles,
gives the operator its own ServiceAccount (:mod:`greenlight.devcluster.identity`), and runs
``greenlight operator`` with that identity until Ctrl-C. It never runs the operator with the
person's own credentials: when the identity cannot be set up, it says why and stops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from greenlight.devcluster.controlplane import ControlPlane, ControlPlaneError, project_root
from greenlight.devcluster.identity import (
    NAMESPACE,
    IdentityError,
    OperatorIdentity,
    ensure_operator_identity,
)
from greenlight.devcluster.manifests import InstallError, install, kubectl_binary

DEFAULT_DIR = Path(".greenlight") / "cluster"
AUDIT_FILE = Path(".greenlight") / "audit.jsonl"
IDENTITY_DIR = Path(".greenlight") / "operator"
CRDS = Path("crds")
CLUSTER_ROLES = Path("helm") / "greenlight" / "files" / "clusterroles.yaml"
_PROBE_SECONDS = 3
_OPERATOR_GRACE_SECONDS = 15


@dataclass(frozen=True)
class Cluster:
    """A cluster to run against: the ``KUBECONFIG`` value that reaches it and a description."""

    kubeconfig: str
    description: str
    local: bool = False


def configured_cluster(environ: Mapping[str, str]) -> Cluster | None:
    """The developer's own cluster, if one is configured and answers ``/readyz`` within 3 s.

    ``KUBECONFIG`` wins, as for kubectl; otherwise ``~/.kube/config``. kubectl does the probing
    so every authentication method it supports (exec plugins, OIDC, tokens) works here too.
    """
    value = environ.get("KUBECONFIG", "")
    if not value:
        default = Path(environ.get("HOME", str(Path.home()))) / ".kube" / "config"
        value = str(default) if default.is_file() else ""
    if not any(Path(part).is_file() for part in value.split(os.pathsep) if part):
        return None
    env = dict(environ, KUBECONFIG=value)
    context = _kubectl_output(["config", "current-context"], env)
    if not context or _kubectl_output(["get", "--raw", "/readyz"], env) is None:
        return None
    return Cluster(kubeconfig=value, description=f"your cluster (context {context.strip()})")


def _kubectl_output(args: Sequence[str], env: Mapping[str, str]) -> str | None:
    try:
        done = subprocess.run(
            [str(kubectl_binary()), f"--request-timeout={_PROBE_SECONDS}s", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=_PROBE_SECONDS + 2,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    return done.stdout if done.returncode == 0 else None


def install_greenlight(kubeconfig: str, root: Path) -> None:
    """Install the CRD and, once the chart provides it, the approver/requester ClusterRoles."""
    crds = install(kubeconfig, [root / CRDS])
    print(f"Installed CRDs: {', '.join(crds)}", flush=True)
    roles = root / CLUSTER_ROLES
    if roles.is_file():
        install(kubeconfig, [roles])
        print(f"Installed ClusterRoles from {CLUSTER_ROLES}", flush=True)
    else:
        print(f"Note: {CLUSTER_ROLES} not found; ClusterRoles not installed", flush=True)


def up(cluster_dir: Path, root: Path | None) -> int:
    """Start the control plane and keep it in the foreground until Ctrl-C."""
    with ControlPlane(cluster_dir) as plane:
        if root is not None:
            install_greenlight(str(plane.kubeconfig), root)
        print(
            f"Control plane ready at {plane.server} (logs in {plane.workdir})\n"
            f"  export KUBECONFIG={plane.kubeconfig}\n"
            "Press Ctrl-C to stop it.",
            flush=True,
        )
        try:
            while plane.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
        print(
            f"A control-plane process exited; see {plane.apiserver_log} and {plane.etcd_log}",
            file=sys.stderr,
        )
        return 1


def run(cluster_dir: Path, root: Path) -> int:
    """``make run``: pick or start a cluster, install Greenlight's API, run the operator."""
    plane: ControlPlane | None = None
    try:
        cluster = configured_cluster(os.environ)
        if cluster is None and ControlPlane.in_use(cluster_dir):
            cluster = Cluster(
                str(cluster_dir.resolve() / "kubeconfig"),
                f"the local control plane already running from {cluster_dir}",
                local=True,
            )
        if cluster is None:
            print(f"No reachable cluster is configured: starting one in {cluster_dir}", flush=True)
            plane = ControlPlane(cluster_dir)
            plane.start()
            cluster = Cluster(
                str(plane.kubeconfig), f"the local control plane at {plane.server}", local=True
            )
        install_greenlight(cluster.kubeconfig, root)
        identity = _operator_identity(cluster, root)
        audit = (root / AUDIT_FILE).resolve()
        audit.parent.mkdir(parents=True, exist_ok=True)
        print(_instructions(cluster, identity, audit, started=plane is not None), flush=True)
        # The local control plane presents a client certificate to webhooks: accept only it.
        client = ControlPlane(cluster_dir).webhook_client_settings() if cluster.local else {}
        return _run_operator(str(identity.kubeconfig), audit, client)
    finally:
        if plane is not None:
            plane.stop()


def _operator_identity(cluster: Cluster, root: Path) -> OperatorIdentity:
    """The operator's own ServiceAccount: with the person's credentials its webhooks would skip
    every write the person makes (they match the operator's user name)."""
    try:
        return ensure_operator_identity(cluster.kubeconfig, root, (root / IDENTITY_DIR).resolve())
    except IdentityError as error:
        raise IdentityError(
            f"{error}\nThe operator is not run with your own credentials: its admission webhooks "
            "skip the operator's writes, so yours would go unchecked. Use credentials that may "
            f"create a ServiceAccount in {NAMESPACE} and ClusterRoles, or install the Helm chart."
        ) from None


def _instructions(
    cluster: Cluster, identity: OperatorIdentity, audit: Path, *, started: bool
) -> str:
    stops = "the operator and the local control plane" if started else "the operator"
    text = f"""
Greenlight's operator is starting against {cluster.description},
as {identity.user} (its own ServiceAccount).
Audit log: {audit}

In another terminal:
  export PATH={Path(sys.executable).parent}:$PATH
  export KUBECONFIG={cluster.kubeconfig}
  kubectl create rolebinding approvers --clusterrole=greenlight-approver --user=alice
  NAME=$(greenlight request --action "pulumi destroy" --target production --workflow-id wf-1)
  kubectl get apr
  kubectl annotate apr $NAME greenlight.dev/decision=approve --as alice
  greenlight wait $NAME          # exit 0 Approved, 2 Denied, 3 Expired, 4 Cancelled
  (you created the request, so you may cancel it but never approve it yourself:
   greenlight cancel $NAME; an approver denies with --reason)
  greenlight audit verify {audit} --key-file {audit.with_name("audit.key")}

Press Ctrl-C here to stop {stops}.
"""
    if not cluster.local:
        text += """
Note: the operator registers its admission webhook at https://127.0.0.1:9443, so the API server
must run on this machine. For a remote cluster (or kind), install the Helm chart instead
(docs/install.md): with failurePolicy Fail, an unreachable webhook blocks ApprovalRequest writes.
"""
    return text


def _operator_command() -> list[str]:
    script = Path(sys.executable).parent / "greenlight"
    if script.is_file():
        return [str(script), "operator"]
    found = shutil.which("greenlight")
    if found is None:
        raise ControlPlaneError("the `greenlight` command is not installed: run `uv sync`")
    return [found, "operator"]


def _run_operator(kubeconfig: str, audit: Path, webhook_client: Mapping[str, str]) -> int:
    env = dict(
        os.environ,
        **webhook_client,
        KUBECONFIG=kubeconfig,
        GREENLIGHT_WEBHOOK_MANAGE="true",
        GREENLIGHT_AUDIT_FILE=str(audit),
        GREENLIGHT_AUDIT_KEY_FILE=str(audit.with_name("audit.key")),
    )
    # Same process group as us: a Ctrl-C in the terminal reaches the operator directly.
    operator = subprocess.Popen(_operator_command(), env=env)

    def forward_sigterm(signum: int, frame: FrameType | None) -> None:
        operator.terminate()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, forward_sigterm)
    try:
        code = operator.wait()
    except KeyboardInterrupt:
        try:
            operator.wait(timeout=_OPERATOR_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
        return 0
    print(f"The operator exited with code {code}.", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m greenlight.devcluster",
        description="A local Kubernetes control plane (kube-apiserver + etcd) for Greenlight.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (
        ("up", "start the control plane and keep it in the foreground"),
        ("run", "use the configured cluster or start one, install Greenlight, run the operator"),
    ):
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_DIR,
            help=f"where the local control plane keeps its state (default {DEFAULT_DIR})",
        )
    args = parser.parse_args(argv)
    # A SIGTERM (from `timeout`, a supervisor) stops everything as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    root = project_root()
    try:
        if args.command == "up":
            return up(args.dir, root)
        if root is None:
            parser.error("run it from a Greenlight checkout: it installs crds/ from there")
        return run(args.dir, root)
    except (ControlPlaneError, InstallError, IdentityError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
