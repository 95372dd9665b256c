"""Render the Greenlight charts with the pinned helm, for tests and for server-side dry runs.

``render(values)`` returns the objects ``helm install`` would create, CRDs first (the chart's
``crds/`` directory), so a caller can apply them in order to a real API server.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
OPERATOR_CHART = REPO / "helm" / "greenlight"
UMBRELLA_CHART = REPO / "helm" / "greenlight-stack"
RELEASE = "greenlight"
NAMESPACE = "greenlight"


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


def helm(*args: str) -> str:
    """Run helm and return stdout; raise HelmError with helm's own message on failure.

    helm's notices about following the chart's symlinks (crds/, files/observability) are
    dropped from the message: they are expected.
    """
    command = [str(helm_binary()), *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
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
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The rendered objects of one kind."""
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single rendered object of ``kind``; fails loudly when there are none or several."""
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def local_umbrella(workdir: Path) -> Path:
    """A copy of the umbrella chart with only its local dependency (the operator chart).

    The remote dependencies (kube-prometheus-stack, Loki, Tempo, Alloy, blackbox exporter) cannot
    be downloaded here, so this copy drops them and renders what is ours: the umbrella's own
    templates, its values wiring, and the operator subchart as the umbrella configures it.
    Symlinks are resolved while copying (the observability files), so the copy is self-contained.
    """
    chart = workdir / UMBRELLA_CHART.name
    shutil.copytree(UMBRELLA_CHART, chart, symlinks=False, ignore=shutil.ignore_patterns("charts"))
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    metadata["dependencies"] = [
        {**dep, "repository": f"file://{OPERATOR_CHART}"}
        for dep in metadata["dependencies"]
        if dep["repository"].startswith("file://")
    ]
    (chart / "Chart.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
    helm("dependency", "build", str(chart))
    return chart
