"""kubectl against the test control plane, as the admin or as an impersonated user."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenlight.devcluster import kubectl_binary


class KubectlFailed(subprocess.CalledProcessError):
    """A kubectl call that exited non-zero; its message carries kubectl's own stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.stdout}"


@dataclass(frozen=True)
class Kubectl:
    """Runs the pinned kubectl with this kubeconfig only, never the developer's own."""

    kubeconfig: Path
    binary: Path = field(default_factory=kubectl_binary)

    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig))

    def __call__(
        self,
        *args: str,
        as_user: str | None = None,
        as_groups: Sequence[str] = (),
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl ARGS``; ``as_user``/``as_groups`` become ``--as``/``--as-group``.

        The admin client certificate is in ``system:masters``, which may impersonate anyone,
        so tests reach ``alice`` or ``system:serviceaccount:NS:orchestrator`` with real RBAC.
        """
        if as_groups and as_user is None:
            raise ValueError("kubectl needs --as whenever --as-group is given")
        identity = [f"--as={as_user}"] if as_user is not None else []
        identity += [f"--as-group={group}" for group in as_groups]
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", *identity, *args]
        done = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise KubectlFailed(done.returncode, argv, done.stdout, done.stderr)
        return done

    def json(self, *args: str, as_user: str | None = None) -> Any:
        """``kubectl ARGS -o json``, parsed."""
        return json.loads(self(*args, "-o", "json", as_user=as_user).stdout)
