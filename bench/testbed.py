"""The benchmark's own world: a fresh control plane, operator processes and the fake Slack.

Everything lives in one temporary directory and is stopped when the run ends, also on error or
Ctrl-C. Operators run as separate processes (`greenlight operator`), as users run them; the fake
Slack Web API server runs inside the benchmark's event loop, so its receive timestamps share a
clock with the watch timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.support.operator import OperatorProcess

from bench.apiclient import ApiClient
from greenlight.adapters.slack.interactions import INTERACTIONS_PATH
from greenlight.core.model import GROUP, KIND, VERSION
from greenlight.devcluster import ControlPlane, install
from greenlight.devcluster.controlplane import free_port

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"
CLUSTER_ROLES = REPO / "helm" / "greenlight" / "files" / "clusterroles.yaml"
APPROVER = "alice"
OUTSIDER = "mallory"  # may patch requests (greenlight-requester), may not approve
APPROVER_SLACK_ID = "U0ALICE001"
SLACK_CHANNEL = "C0BENCH001"
PLAN_DETAILS_MAX = 262_144  # the CRD's maxLength for spec.plan.details
# etcd's default backend quota (2 GiB) is too small for 10,000+ objects with big plans and their
# revisions until compaction; the control plane's etcd reads ETCD_* settings from its environment.
ETCD_QUOTA_BYTES = 8 * 1024**3


def plan_details(kib: int) -> str:
    """Plan text of `kib` KiB (ASCII, so characters = bytes), at most the CRD's limit."""
    line = "delete aws:s3:Bucket bench\n"
    if kib <= 0:
        return line.strip()
    size = min(kib * 1024, PLAN_DETAILS_MAX)
    return (line * (size // len(line) + 1))[:size]


def manifest(
    name: str, *, timeout: str = "7d", channel: str | None = None, plan_kib: int = 0
) -> dict[str, Any]:
    """A valid ApprovalRequest; small unless `plan_kib` asks for a plan of that size."""
    spec: dict[str, Any] = {
        "action": "pulumi destroy",
        "target": "bench",
        "requester": {"workflowId": "wf-bench", "taskId": name},
        "plan": {"summary": "-1 resource", "details": plan_details(plan_kib)},
        "timeout": timeout,
    }
    if channel is not None:
        spec["notify"] = {"slack": {"channel": channel}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` from /proc (VmRSS, in kB)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return int(match.group(1)) / 1024


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far, from /proc/PID/stat (utime, stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is state
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def gauge(metrics_text: str, name: str) -> float | None:
    """The value of an unlabelled sample in Prometheus text exposition."""
    match = re.search(rf"^{re.escape(name)} ([0-9.eE+-]+)$", metrics_text, re.MULTILINE)
    return float(match.group(1)) if match else None


@dataclass
class Testbed:
    workdir: Path
    plane: ControlPlane
    api: ApiClient
    slack: FakeSlack
    operators: list[OperatorProcess] = field(default_factory=list)
    interactions: dict[str, str] = field(default_factory=dict)  # label -> Slack endpoint URL
    profile_dir: Path | None = None  # record every operator with py-spy into this directory
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def plane_cpu(self) -> float:
        """User + system CPU seconds of kube-apiserver and etcd so far."""
        return sum(cpu_seconds(pid) for pid in self.plane.pids().values())

    async def namespace(self, name: str) -> str:
        """A namespace where APPROVER may approve and deny (the greenlight-approver role) and
        OUTSIDER may only create and patch (the greenlight-requester role)."""
        await self.api.apply_raw(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        binding: dict[str, Any] = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "approvers", "namespace": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "greenlight-approver",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": APPROVER}
            ],
        }
        await self.api.apply_raw(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}/rolebindings", binding
        )
        outsider = {
            **binding,
            "metadata": {"name": "requesters", "namespace": name},
            "roleRef": {**binding["roleRef"], "name": "greenlight-requester"},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OUTSIDER}
            ],
        }
        await self.api.apply_raw(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}/rolebindings", outsider
        )
        return name

    async def operator(
        self,
        label: str,
        namespaces: list[str],
        *,
        slack: bool,
        env: Mapping[str, str] | None = None,
    ) -> OperatorProcess:
        """Start `greenlight operator` for `namespaces` (Slack through the fake, or console)."""
        settings = {"GREENLIGHT_NAMESPACES": ",".join(namespaces), "GREENLIGHT_LOG_LEVEL": "WARN"}
        if slack:
            user_map = self.workdir / "slack-users.yaml"
            user_map.write_text(f"{APPROVER_SLACK_ID}: {APPROVER}\n")
            settings.update(
                GREENLIGHT_SLACK_BOT_TOKEN=BOT_TOKEN,
                GREENLIGHT_SLACK_SIGNING_SECRET=SIGNING_SECRET,
                GREENLIGHT_SLACK_API_URL=self.slack.api_url,
                GREENLIGHT_SLACK_DEFAULT_CHANNEL=SLACK_CHANNEL,
                GREENLIGHT_SLACK_MODE="http",
                GREENLIGHT_SLACK_USER_MAP_FILE=str(user_map),
            )
            port = free_port()
            settings["GREENLIGHT_SLACK_INTERACTIONS_PORT"] = str(port)
            self.interactions[label] = f"http://127.0.0.1:{port}{INTERACTIONS_PATH}"
        settings.update(env or {})
        process = OperatorProcess(self.plane, self.workdir / label, env=settings)
        self.operators.append(process)
        await asyncio.to_thread(process.start, 60.0)
        if self.profile_dir is not None:
            self.profile(process, label)
        return process

    def profile(self, process: OperatorProcess, label: str) -> None:
        """Sample the operator with py-spy (collapsed stacks) until the process exits."""
        assert self.profile_dir is not None
        assert process.process is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        pyspy = shutil.which("py-spy") or "py-spy"
        output = self.profile_dir / f"{label}-{process.process.pid}.txt"
        self.profilers.append(
            subprocess.Popen(
                [
                    pyspy,
                    "record",
                    "--pid",
                    str(process.process.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--output",
                    str(output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    async def metrics(self, process: OperatorProcess) -> str:
        return await asyncio.to_thread(process.metrics)


@contextlib.asynccontextmanager
async def started_testbed(profile_dir: Path | None = None) -> AsyncIterator[Testbed]:
    """Start the control plane and the fake Slack; tear everything down afterwards."""
    os.environ.setdefault("ETCD_QUOTA_BACKEND_BYTES", str(ETCD_QUOTA_BYTES))
    with tempfile.TemporaryDirectory(prefix="greenlight-bench-") as tmp:
        workdir = Path(tmp)
        plane = ControlPlane(workdir / "control-plane")
        await asyncio.to_thread(plane.start)
        operators: list[OperatorProcess] = []
        try:
            await asyncio.to_thread(install, plane.kubeconfig, [CRDS, CLUSTER_ROLES])
            api = ApiClient(plane)
            try:
                async with FakeSlack() as slack:
                    slack.add_user(APPROVER_SLACK_ID, f"{APPROVER}@example.com")
                    bed = Testbed(workdir, plane, api, slack, operators, profile_dir=profile_dir)
                    try:
                        yield bed
                    finally:
                        for process in operators:
                            process.kill()
                        for profiler in bed.profilers:
                            profiler.wait(timeout=60)
            finally:
                await api.close()
        finally:
            for process in operators:
                process.kill()
            await asyncio.to_thread(plane.stop)
