"""Render the Greenlight charts with the pinned helm, for tests and for server-side dry runs.

``render(values)`` returns the objects ``helm install`` would create, CRDs first (the chart's
``crds/`` directory), so a caller can apply them in order to a real API server.

``umbrella(workdir)`` builds the umbrella chart with its real dependencies: the released charts
of the mirror ``../shared/charts`` (served on a loopback port), or the upstream chart
repositories when there is no mirror; the test is skipped when neither can be reached.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OPERATOR_CHART = REPO / "helm" / "greenlight"
UMBRELLA_CHART = REPO / "helm" / "greenlight-stack"
RELEASE = "greenlight"
NAMESPACE = "greenlight"
# Released charts, one Helm repository per folder (its README lists them); in CI the repository
# and shared/ are siblings.
MIRROR = REPO.parent / "shared" / "charts"
# The upstream repositories the umbrella names, and the mirror folder holding each one's charts.
MIRROR_FOLDERS = {
    "https://prometheus-community.github.io/helm-charts": "prometheus-community",
    "https://grafana-community.github.io/helm-charts": "grafana-community",
    "https://grafana.github.io/helm-charts": "grafana",
}


class _ManifestLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: a bare ``=`` (an enum value in a CRD) is a string, not the
    YAML 1.1 ``value`` type PyYAML knows no constructor for."""


def _construct_value(loader: _ManifestLoader, node: yaml.ScalarNode) -> str:
    return loader.construct_scalar(node)


_ManifestLoader.add_constructor("tag:yaml.org,2002:value", _construct_value)


def load_manifests(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document manifest, empty documents dropped."""
    return [doc for doc in yaml.load_all(text, Loader=_ManifestLoader) if doc]


class HelmError(RuntimeError):
    """helm exited non-zero; ``stderr`` carries its message (e.g. the schema violation)."""

    def __init__(self, args: list[str], stderr: str) -> None:
        super().__init__(f"{' '.join(args)} failed:\n{stderr}")
        self.stderr = stderr


@functools.cache
def helm_binary() -> Path:
    """The helm that hack/helm/install.sh builds (once per pinned version) from the Go proxy."""
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "helm" / "install.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(result.stdout.strip()) / "helm"


def helm(*args: str, env: dict[str, str] | None = None) -> str:
    """Run helm and return stdout; raise HelmError with helm's own message on failure.

    helm's notices about following the chart's symlinks (crds/, files/observability) are
    dropped from the message: they are expected. ``env`` is added to the environment.
    """
    command = [str(helm_binary()), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    stderr = "\n".join(
        line for line in result.stderr.splitlines() if "found symbolic link in path" not in line
    )
    if result.returncode != 0:
        raise HelmError(command, stderr)
    return result.stdout


def render(
    values: dict[str, Any],
    *,
    chart: Path = OPERATOR_CHART,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    include_crds: bool = True,
) -> list[dict[str, Any]]:
    """``helm template`` the chart with ``values`` and return the rendered objects in order."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as values_file:
        yaml.safe_dump(values, values_file)
        values_file.flush()
        args = ["template", release, str(chart), "--namespace", namespace, "-f", values_file.name]
        if include_crds:
            args.append("--include-crds")
        manifest = helm(*args)
    return load_manifests(manifest)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The rendered objects of one kind."""
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single rendered object of ``kind``; fails loudly when there are none or several."""
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def index(folder: str) -> dict[str, Any]:
    """The ``index.yaml`` of one mirror folder (a Helm repository)."""
    loaded: dict[str, Any] = yaml.safe_load((MIRROR / folder / "index.yaml").read_text())
    return loaded


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: the test output stays helm's."""


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free loopback port; yields its base URL."""

    def handler(*args: Any, **kwargs: Any) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(directory), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _helm_home(workdir: Path) -> dict[str, str]:
    """A helm environment of its own, so the user's repositories and cache stay untouched."""
    home = workdir / "helm-home"
    return {
        "HELM_REPOSITORY_CONFIG": str(home / "repositories.yaml"),
        "HELM_REPOSITORY_CACHE": str(home / "repository-cache"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def _mirror_repositories(base_url: str, env: dict[str, str]) -> None:
    """Register each upstream repository under its own URL, with the mirror's index as its cache.

    The cached index names the packages by their loopback URL, so ``helm dependency build
    --skip-refresh`` downloads the released packages from the mirror while the chart keeps its
    upstream URLs, and the committed Chart.lock is checked as it is.
    """
    cache = Path(env["HELM_REPOSITORY_CACHE"])
    cache.mkdir(parents=True)
    entries = []
    for url, folder in MIRROR_FOLDERS.items():
        repository = index(folder)
        for versions in repository["entries"].values():
            for version in versions:
                version["urls"] = [f"{base_url}/{folder}/{u}" for u in version["urls"]]
        (cache / f"{folder}-index.yaml").write_text(yaml.safe_dump(repository))
        entries.append({"name": folder, "url": url})
    config = Path(env["HELM_REPOSITORY_CONFIG"])
    config.write_text(yaml.safe_dump({"apiVersion": "", "repositories": entries}))


def _upstream_reachable() -> str | None:
    """None when every upstream repository answers, else why not."""
    for url in MIRROR_FOLDERS:
        try:
            with urllib.request.urlopen(f"{url}/index.yaml", timeout=10):
                pass
        except (OSError, urllib.error.URLError) as error:
            return f"{url}: {error}"
    return None


def _copy_charts(workdir: Path) -> Path:
    """The umbrella and the operator chart side by side (``file://../greenlight`` resolves), with
    their symlinks (crds/, files/observability) resolved so the copy is self-contained."""
    for chart in (UMBRELLA_CHART, OPERATOR_CHART):
        shutil.copytree(
            chart, workdir / chart.name, symlinks=False, ignore=shutil.ignore_patterns("charts")
        )
    return workdir / UMBRELLA_CHART.name


def umbrella(workdir: Path) -> Path:
    """A copy of the umbrella chart with every dependency built by ``helm dependency build``.

    From the mirror when ``../shared/charts`` exists, else from the upstream repositories; the
    caller's test is skipped, saying why, when neither is available.
    """
    chart = _copy_charts(workdir)
    env = _helm_home(workdir)
    if MIRROR.is_dir():
        with serve(MIRROR) as base_url:
            _mirror_repositories(base_url, env)
            helm("dependency", "build", "--skip-refresh", str(chart), env=env)
        return chart
    unreachable = _upstream_reachable()
    if unreachable:
        pytest.skip(
            f"the umbrella's dependencies cannot be built: no chart mirror at {MIRROR} and the "
            f"upstream chart repositories are unreachable ({unreachable})"
        )
    for url, name in MIRROR_FOLDERS.items():
        helm("repo", "add", name, url, env=env)
    helm("dependency", "build", str(chart), env=env)
    return chart
