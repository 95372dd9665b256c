"""The operator as a separate process (`greenlight operator`), as users run it.

Tests start it against the test control plane, kill it with SIGKILL, restart it, read its JSON
log lines and scrape its /metrics. It manages its own webhook configuration (as `make run` does),
so a (re)start also re-points the API server's admission webhooks at this process. Like `make run`,
it runs as its own ServiceAccount with the chart's RBAC (a TokenRequest token), never as the
admin: the webhooks skip the operator's writes, so the admin's would go unchecked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from greenlight.devcluster import ControlPlane
from greenlight.devcluster.controlplane import free_port
from greenlight.devcluster.identity import OperatorIdentity, ensure_operator_identity

REPO = Path(__file__).resolve().parents[2]
_identities: dict[Path, OperatorIdentity] = {}


def operator_identity(plane: ControlPlane) -> OperatorIdentity:
    """The operator's ServiceAccount on `plane` (set up once per control plane)."""
    if plane.workdir not in _identities:
        _identities[plane.workdir] = ensure_operator_identity(
            str(plane.kubeconfig), REPO, plane.workdir / "operator-identity"
        )
    return _identities[plane.workdir]


class OperatorProcess:
    def __init__(
        self,
        plane: ControlPlane,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.plane = plane
        self.workdir = workdir
        self.extra_env = dict(env or {})
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.webhook_port = free_port()
        self.audit_file = workdir / "audit.jsonl"
        self.audit_key_file = workdir / "audit.key"
        self.log_file = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def environment(self) -> dict[str, str]:
        env = self.plane.env()
        env.update(
            KUBECONFIG=str(operator_identity(self.plane).kubeconfig),
            GREENLIGHT_WEBHOOK_MANAGE="true",
            GREENLIGHT_WEBHOOK_PORT=str(self.webhook_port),
            GREENLIGHT_METRICS_PORT=str(self.metrics_port),
            GREENLIGHT_HEALTH_PORT=str(self.health_port),
            GREENLIGHT_AUDIT_FILE=str(self.audit_file),
            GREENLIGHT_AUDIT_KEY_FILE=str(self.audit_key_file),
            GREENLIGHT_LOG_LEVEL="INFO",
            **self.plane.webhook_client_settings(),
            PYTHONUNBUFFERED="1",
        )
        for key in [k for k in env if k.startswith("OTEL_")]:
            del env[key]
        env["OTEL_TRACES_EXPORTER"] = "none"
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "greenlight", "operator"],
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Ready = health endpoint answers and the webhook configuration points at this process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"operator exited with {self.process.returncode}:\n{self.tail()}"
                )
            if self._healthy() and self._webhook_listening() and self.webhook_points_here():
                return
            time.sleep(0.2)
        raise TimeoutError(f"operator not ready after {timeout}s:\n{self.tail()}")

    def _webhook_listening(self) -> bool:
        """The webhook server accepts connections (after a restart on the same port, the
        configuration points here before the new server listens)."""
        try:
            with socket.create_connection(("127.0.0.1", self.webhook_port), timeout=1):
                return True
        except OSError:
            return False

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def webhook_points_here(self) -> bool:
        """Both configurations name this process's port (the operator writes the mutating one
        first: until the validating one follows, writes still go to the previous port)."""
        from kubernetes import client

        api = self.plane.api_client()
        admission = client.AdmissionregistrationV1Api(api)
        try:
            configs: list[Any] = [
                admission.read_mutating_webhook_configuration("greenlight.dev"),
                admission.read_validating_webhook_configuration("greenlight.dev"),
            ]
        except client.exceptions.ApiException:
            return False
        finally:
            api.close()
        for config in configs:
            assert config.webhooks is not None, "the operator's configuration lists its webhooks"
        return all(
            f":{self.webhook_port}/" in (hook.client_config.url or "")
            for config in configs
            for hook in config.webhooks
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush — as a crash."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def log_lines(self) -> list[str]:
        return (
            self.log_file.read_text(errors="replace").splitlines() if self.log_file.exists() else []
        )

    def log_records(self) -> list[dict[str, Any]]:
        """Every log line, parsed as JSON (a line that is not JSON raises: that is a defect)."""
        return [json.loads(line) for line in self.log_lines() if line.strip()]

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """One sample from /metrics (0 when the series is absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def audit_records(self) -> list[dict[str, Any]]:
        if not self.audit_file.exists():
            return []
        return [json.loads(line) for line in self.audit_file.read_text().splitlines() if line]
