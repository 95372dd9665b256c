"""Runs the real Prometheus and Alertmanager servers (Debian packages) on loopback for tests."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from greenlight.devcluster.controlplane import free_port

PROMETHEUS_BIN = Path("/usr/bin/prometheus")
ALERTMANAGER_BIN = Path("/usr/bin/prometheus-alertmanager")
STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Server:
    """A running server: where it listens and where its log goes."""

    url: str
    log: Path

    def get_json(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {STARTUP_TIMEOUT_S}s:\n{log.read_text()}")


@contextmanager
def _running(args: list[str], url: str, log: Path) -> Iterator[Server]:
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, process, log)
        yield Server(url=url, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def prometheus(workdir: Path, config: dict[str, Any]) -> Iterator[Server]:
    """Prometheus with ``config`` (rule file paths must be absolute), data under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yaml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    args = [
        str(PROMETHEUS_BIN),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with _running(args, f"http://127.0.0.1:{port}", workdir / "prometheus.log") as server:
        yield server


@contextmanager
def alertmanager(workdir: Path, config: dict[str, Any]) -> Iterator[Server]:
    """Alertmanager with ``config``, state under ``workdir``, clustering disabled."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "alertmanager.yaml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    args = [
        str(ALERTMANAGER_BIN),
        f"--config.file={config_file}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    with _running(args, f"http://127.0.0.1:{port}", workdir / "alertmanager.log") as server:
        yield server
