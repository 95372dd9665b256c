"""Child processes that cannot outlive the Python process that started them.

etcd and kube-apiserver each run in their own session (so a Ctrl-C aimed at the foreground
job does not tear them down before we stop them in order) and are stopped by signalling the
whole process group. When started from the main thread they also get ``PR_SET_PDEATHSIG``, so
a ``kill -9`` of the test runner or of ``make run`` still takes them down instead of leaking
servers that hold ports and the etcd data directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the atexit hook and stop() remain
    _prctl = None


class ChildProcess:
    """One long-running server process whose output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.log = log
        self._env = dict(env) if env is not None else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        with self.log.open("ab") as log:
            log.write(f"--- starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
                preexec_fn=_die_with_parent_preexec(),
            )

    def exit_code(self) -> int | None:
        """``None`` while running (or never started), else the exit status."""
        return self._process.poll() if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, grace: float) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; idempotent."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        # Helpers the server forked into its group must not survive it either.
        _signal_group(process.pid, signal.SIGKILL)
        self._process = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            with self.log.open(errors="replace") as handle:
                return "".join(deque(handle, maxlen=lines))
        except FileNotFoundError:
            return ""


def kill_stale_group(pid: int, marker: str) -> bool:
    """SIGKILL the process group of ``pid`` if that process is still ours.

    ``marker`` (the cluster directory) must appear in its command line, so a recycled pid that
    now belongs to something else is left alone. Returns whether a process was killed.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if marker.encode() not in cmdline:
        return False
    _signal_group(pid, signal.SIGKILL)
    return True


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie waiting to be reaped does not count."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _die_with_parent_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that ties the child's life to this thread, or ``None`` when unsafe.

    The kernel delivers the death signal when the *thread* that forked the child exits, so it
    is only armed for children started from the main thread; a worker thread would otherwise
    take the control plane down when it finishes.
    """
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()
    prctl = _prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm
