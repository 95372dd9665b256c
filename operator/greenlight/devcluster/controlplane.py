"""A local Kubernetes control plane: etcd and kube-apiserver on loopback, nothing else.

It is the API server the integration and end-to-end tests run against and the one ``make run``
starts when no cluster is configured. It has real authentication (client certificates),
real RBAC, real admission (webhooks included) and real CRD validation, but no
kube-controller-manager, scheduler or kubelet: see docs/development.md for what that leaves out.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import http.client
import json
import os
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from greenlight.devcluster.credentials import (
    ADMIN_USER,
    WEBHOOK_CLIENT,
    ControlPlanePki,
    ensure_pki,
)
from greenlight.devcluster.processes import ChildProcess, is_running, kill_stale_group
from greenlight.pki import KeyPair

CONTEXT_NAME = "greenlight-dev"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
_BIND_ATTEMPTS = 3
_ADDRESS_IN_USE = "address already in use"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started; the message carries the server's last log lines."""


def project_root(start: Path | None = None) -> Path | None:
    """The Greenlight checkout around ``start`` (default: the working directory) or this file."""
    for origin in (start or Path.cwd(), Path(__file__)):
        for directory in (origin.resolve(), *origin.resolve().parents):
            if (directory / "hack" / "envtest" / "build.sh").is_file():
                return directory
    return None


def find_assets(root: Path | None = None) -> Path:
    """The directory holding ``kube-apiserver`` and ``etcd``.

    ``KUBEBUILDER_ASSETS`` wins when it holds both binaries (the envtest convention); otherwise
    ``hack/envtest/build.sh`` prints its cache directory, building the binaries the first time.
    """
    configured = os.environ.get("KUBEBUILDER_ASSETS")
    if configured and _has_binaries(Path(configured)):
        return Path(configured)
    checkout = root or project_root()
    if checkout is None:
        raise ControlPlaneError(
            "kube-apiserver and etcd not found: set KUBEBUILDER_ASSETS to a directory holding "
            "both, or run from a Greenlight checkout (`make control-plane` builds them)"
        )
    built = subprocess.run(
        ["bash", str(checkout / "hack" / "envtest" / "build.sh")],
        check=False,
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        raise ControlPlaneError(
            f"hack/envtest/build.sh failed (exit {built.returncode}):\n{built.stderr[-4000:]}"
        )
    assets = Path(built.stdout.strip().splitlines()[-1])
    if not _has_binaries(assets):
        raise ControlPlaneError(f"hack/envtest/build.sh printed {assets}, which lacks the binaries")
    return assets


def _has_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in ("kube-apiserver", "etcd"))


_PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_LISTEN_PORT = 10000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port the kernel gives to outgoing connections (Linux default 32768)."""
    try:
        return int(_PORT_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing holds right now, for a server started later.

    It is drawn below the kernel's ephemeral range: a port from that range (what binding to
    port 0 returns) can become the local end of any outgoing connection (a webhook call, an
    etcd client) between the choice and the server's bind, which then fails with "address
    already in use". No port is handed out twice by one process, so a server restarted on its
    own port never races another's choice. Where the ephemeral range leaves no room below it,
    the kernel chooses.
    """
    low = _ephemeral_low()
    if low - _LOWEST_LISTEN_PORT >= 1000:
        for _ in range(200):
            port = _LOWEST_LISTEN_PORT + secrets.randbelow(low - _LOWEST_LISTEN_PORT)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        chosen: int = probe.getsockname()[1]
    _handed_out.add(chosen)
    return chosen


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ControlPlane:
    """etcd + kube-apiserver in ``workdir``: PKI, etcd data, logs and an admin kubeconfig.

    ``start()`` returns once ``/readyz`` passes and the ``default`` namespace exists; ``stop()``
    (also run at interpreter exit) kills both process groups. The etcd data survives
    ``restart_apiserver()`` and, for a persistent ``workdir``, a full stop and start.
    One ``workdir`` serves one running control plane at a time (a lock file enforces it).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        assets: Path | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        self.workdir = workdir.resolve()
        self.startup_timeout = startup_timeout
        self._assets = assets
        self._pki: ControlPlanePki | None = None
        self._etcd: ChildProcess | None = None
        self._apiserver: ChildProcess | None = None
        self._etcd_client_port = 0
        self._etcd_peer_port = 0
        self._port = 0
        self._lock_fd: int | None = None

    # -- what clients need ---------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        if not self._port:
            raise ControlPlaneError("the control plane has not been started")
        return f"https://127.0.0.1:{self._port}"

    @property
    def ca_file(self) -> Path:
        return self._require_pki().ca.cert

    @property
    def apiserver_log(self) -> Path:
        return self.workdir / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        return self.workdir / "etcd.log"

    def pids(self) -> dict[str, int]:
        """Process ids of the running servers, by name."""
        running = (self._etcd, self._apiserver)
        return {p.name: p.pid for p in running if p is not None and p.pid is not None}

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a subprocess that must talk to this control plane and nothing else."""
        environment = dict(os.environ if base is None else base)
        environment["KUBECONFIG"] = str(self.kubeconfig)
        return environment

    def webhook_client_settings(self) -> dict[str, str]:
        """The operator settings that accept webhook calls from this API server only: the CA
        of its client certificate, and the certificate's name."""
        return {
            "GREENLIGHT_WEBHOOK_CLIENT_CA_FILE": str(self._require_pki().ca.cert),
            "GREENLIGHT_WEBHOOK_CLIENT_NAMES": WEBHOOK_CLIENT,
        }

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` authenticated as the admin (``system:masters``)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._etcd is not None:
            raise ControlPlaneError(f"the control plane in {self.workdir} is already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        atexit.register(self.stop)
        try:
            self._kill_leftovers()
            self._pki = ensure_pki(self.workdir / "pki")
            assets = self._assets or find_assets()
            self._start_etcd(assets / "etcd")
            self._port = free_port()
            self._write_kubeconfig()
            self._start_apiserver(assets / "kube-apiserver", new_port_on_conflict=True)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd; safe to call more than once."""
        if self._apiserver is not None:
            self._apiserver.stop(grace=10)
            self._apiserver = None
        if self._etcd is not None:
            self._etcd.stop(grace=10)
            self._etcd = None
        if self._lock_fd is not None:
            (self.workdir / "pids.json").unlink(missing_ok=True)
            self._release_lock()
        atexit.unregister(self.stop)

    def stop_apiserver(self) -> None:
        """Stop only kube-apiserver (etcd keeps the data); clients see the API go away."""
        if self._apiserver is None:
            raise ControlPlaneError("kube-apiserver is not running")
        self._apiserver.stop(grace=10)
        self._apiserver = None

    def start_apiserver(self) -> None:
        """Start kube-apiserver again on the same port, so existing kubeconfigs keep working."""
        if self._etcd is None:
            raise ControlPlaneError("start() the control plane first")
        if self._apiserver is not None:
            raise ControlPlaneError("kube-apiserver is already running")
        assets = self._assets or find_assets()
        self._start_apiserver(assets / "kube-apiserver", new_port_on_conflict=False)

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def alive(self) -> bool:
        """Whether both servers are still running (they never exit on their own when healthy)."""
        servers = (self._etcd, self._apiserver)
        return all(p is not None and p.running() for p in servers)

    @staticmethod
    def in_use(workdir: Path) -> bool:
        """Whether another process runs a control plane from ``workdir`` right now."""
        lock = workdir.resolve() / "lock"
        if not lock.exists():
            return False
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    # -- etcd ----------------------------------------------------------------------------

    def _start_etcd(self, binary: Path) -> None:
        for _ in range(_BIND_ATTEMPTS):
            self._etcd_client_port, self._etcd_peer_port = free_port(), free_port()
            client = f"http://127.0.0.1:{self._etcd_client_port}"
            peer = f"http://127.0.0.1:{self._etcd_peer_port}"
            self._etcd = ChildProcess(
                "etcd",
                [
                    str(binary),
                    "--name=greenlight",
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=greenlight={peer}",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                self.etcd_log,
            )
            self._etcd.start()
            self._record_pids()
            if self._wait_until_ready(self._etcd, self._etcd_problem, retry_on_conflict=True):
                return
            self._etcd.stop(grace=1)
        raise ControlPlaneError(f"etcd found no free port in {_BIND_ATTEMPTS} attempts")

    def _etcd_problem(self) -> str | None:
        connection = http.client.HTTPConnection("127.0.0.1", self._etcd_client_port, timeout=2)
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
        finally:
            connection.close()
        if response.status == 200 and '"health":"true"' in body:
            return None
        return f"/health answered {response.status}: {body.strip()}"

    # -- kube-apiserver ------------------------------------------------------------------

    def _start_apiserver(self, binary: Path, *, new_port_on_conflict: bool) -> None:
        for _ in range(_BIND_ATTEMPTS):
            self._apiserver = ChildProcess(
                "kube-apiserver", self._apiserver_argv(binary), self.apiserver_log
            )
            self._apiserver.start()
            self._record_pids()
            if self._wait_until_ready(
                self._apiserver, self._apiserver_problem, retry_on_conflict=new_port_on_conflict
            ):
                return
            self._apiserver.stop(grace=1)
            self._port = free_port()
            self._write_kubeconfig()
        raise ControlPlaneError(f"kube-apiserver found no free port in {_BIND_ATTEMPTS} attempts")

    def _apiserver_argv(self, binary: Path) -> list[str]:
        pki = self._require_pki()
        return [
            str(binary),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self._port}",
            f"--cert-dir={self.workdir / 'pki'}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--etcd-servers=http://127.0.0.1:{self._etcd_client_port}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # No token controller runs, so the ServiceAccount plugin's defaults cannot be met.
            "--disable-admission-plugins=ServiceAccount",
            # There are no endpoints to publish: nothing routes to the `kubernetes` Service.
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            f"--admission-control-config-file={self._write_admission_config(pki)}",
        ]

    def _write_admission_config(self, pki: ControlPlanePki) -> Path:
        """Admission webhooks get a client certificate from this API server, so a webhook server
        can tell the API server's calls from anyone else's."""
        kubeconfig = self.workdir / "webhook-client.kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "users": [
                        {
                            "name": "*",
                            "user": {
                                "client-certificate": str(pki.webhook_client.cert),
                                "client-key": str(pki.webhook_client.key),
                            },
                        }
                    ],
                }
            )
        )
        webhooks = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(kubeconfig),
        }
        config = self.workdir / "admission.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "apiserver.config.k8s.io/v1",
                    "kind": "AdmissionConfiguration",
                    "plugins": [
                        {"name": name, "configuration": webhooks}
                        for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
                    ],
                }
            )
        )
        return config

    def _apiserver_problem(self) -> str | None:
        status, body = self._admin_get("/readyz")
        if status != 200:
            failing = [line for line in body.splitlines() if line.startswith("[-]")]
            return f"/readyz answered {status}: {', '.join(failing) or body.strip()[-300:]}"
        # The bootstrap controller creates `default` just after the server turns ready.
        status, body = self._admin_get("/api/v1/namespaces/default")
        if status != 200:
            return f"namespace default not there yet ({status})"
        return None

    def _admin_get(self, path: str) -> tuple[int, str]:
        pki = self._require_pki()
        context = ssl.create_default_context(cafile=str(pki.ca.cert))
        context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self._port, context=context, timeout=3
        )
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            connection.close()

    # -- shared plumbing -----------------------------------------------------------------

    def _wait_until_ready(
        self,
        process: ChildProcess,
        problem: Callable[[], str | None],
        *,
        retry_on_conflict: bool,
    ) -> bool:
        """Poll until ready (True); False when the port was taken and a retry may help."""
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while True:
            code = process.exit_code()
            if code is not None:
                tail = process.log_tail()
                if retry_on_conflict and _ADDRESS_IN_USE in tail.rsplit("--- starting", 1)[-1]:
                    return False
                raise ControlPlaneError(
                    f"{process.name} exited with code {code} while starting; "
                    f"last lines of {process.log}:\n{tail}"
                )
            try:
                current = problem()
            except (OSError, http.client.HTTPException) as error:
                current = f"{type(error).__name__}: {error}"
            if current is None:
                return True
            last = current
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{process.name} not ready after {self.startup_timeout:.0f}s ({last}); "
                    f"last lines of {process.log}:\n{process.log_tail()}"
                )
            time.sleep(0.1)

    def _require_pki(self) -> ControlPlanePki:
        if self._pki is None:
            self._pki = ensure_pki(self.workdir / "pki")
        return self._pki

    def _write_kubeconfig(self) -> None:
        pki = self._require_pki()
        self._write_kubeconfig_for(self.kubeconfig, ADMIN_USER, pki.admin)

    def _write_kubeconfig_for(self, path: Path, user: str, pair: KeyPair) -> None:
        pki = self._require_pki()

        def encoded(file: Path) -> str:
            return base64.b64encode(file.read_bytes()).decode()

        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": CONTEXT_NAME,
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": encoded(pki.ca.cert),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": encoded(pair.cert),
                        "client-key-data": encoded(pair.key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": CONTEXT_NAME,
                    "context": {"cluster": CONTEXT_NAME, "user": user},
                }
            ],
            "current-context": CONTEXT_NAME,
            "preferences": {},
        }
        staging = path.with_suffix(".tmp")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(document, handle, sort_keys=False)
        staging.replace(path)

    def _record_pids(self) -> None:
        (self.workdir / "pids.json").write_text(json.dumps(self.pids()))

    def _kill_leftovers(self) -> None:
        """Kill servers a crashed earlier owner of this directory left behind."""
        record = self.workdir / "pids.json"
        try:
            pids = json.loads(record.read_text())
        except (OSError, ValueError):
            return
        killed = [pid for pid in pids.values() if kill_stale_group(int(pid), str(self.workdir))]
        deadline = time.monotonic() + 10
        while killed and time.monotonic() < deadline:
            killed = [pid for pid in killed if is_running(pid)]
            time.sleep(0.05)
        record.unlink(missing_ok=True)

    def _acquire_lock(self) -> None:
        fd = os.open(self.workdir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ControlPlaneError(
                f"a control plane is already running from {self.workdir}; use it with "
                f"KUBECONFIG={self.kubeconfig} or stop it first"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
