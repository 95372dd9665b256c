"""Every chart dependency is a released chart: the umbrella's pins, its Chart.lock, and the
dependencies of the released charts themselves all resolve in the mirror's repository indexes."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from tests.charts.render import MIRROR, MIRROR_FOLDERS, REPO, UMBRELLA_CHART, index

INSTALL_DOC = REPO / "docs" / "install.md"
# Loki depends on minio from its own repository; the mirror carries it too.
REPOSITORY_FOLDERS = {**MIRROR_FOLDERS, "https://charts.min.io/": "minio"}

pytestmark = pytest.mark.skipif(
    not MIRROR.is_dir(), reason=f"no chart mirror at {MIRROR}: release indexes unavailable"
)


def chart_yaml() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((UMBRELLA_CHART / "Chart.yaml").read_text())
    return loaded


def remote(dependencies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dep for dep in dependencies if not dep["repository"].startswith("file://")]


def released(folder: str, name: str) -> set[str]:
    return {entry["version"] for entry in index(folder)["entries"].get(name, [])}


def matches(constraint: str, version: str) -> bool:
    """The constraint forms the released charts use: an exact version, or ``X.Y.*``."""
    if constraint.endswith(".*"):
        return version.startswith(constraint[:-1])
    return constraint == version


def folder_of(repository: str) -> str:
    """The mirror folder holding the charts of an upstream repository URL."""
    assert repository in REPOSITORY_FOLDERS, f"{repository} has no folder in {MIRROR}"
    return REPOSITORY_FOLDERS[repository]


def test_umbrella_pins_are_exact_released_versions() -> None:
    for dep in remote(chart_yaml()["dependencies"]):
        assert re.fullmatch(r"\d+\.\d+\.\d+", dep["version"]), dep
        versions = released(folder_of(dep["repository"]), dep["name"])
        assert dep["version"] in versions, (
            f"{dep['name']} {dep['version']} was never released; released: {sorted(versions)}"
        )


def test_chart_lock_records_exactly_the_pins() -> None:
    lock = yaml.safe_load((UMBRELLA_CHART / "Chart.lock").read_text())

    def key(deps: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return [(d["name"], d["version"], d["repository"]) for d in deps]

    assert key(lock["dependencies"]) == key(chart_yaml()["dependencies"])


@pytest.mark.parametrize("folder", sorted(set(MIRROR_FOLDERS.values()) | {"minio"}))
def test_every_dependency_of_every_released_chart_is_released_too(folder: str) -> None:
    for name, entries in index(folder)["entries"].items():
        for entry in entries:
            for dep in entry.get("dependencies", []):
                repository = dep.get("repository", "")
                if not repository or repository.startswith("file://"):
                    continue  # a subchart inside the package
                versions = released(folder_of(repository), dep["name"])
                assert any(matches(dep["version"], v) for v in versions), (
                    f"{name} {entry['version']} needs {dep['name']} {dep['version']}: "
                    f"released {sorted(versions)}"
                )


def test_a_pin_to_an_unreleased_version_is_caught() -> None:
    # 81.4.5 existed only on an unmerged upstream pull request.
    versions = released("prometheus-community", "kube-prometheus-stack")
    assert "81.4.5" not in versions
    assert "88.5.3" in versions


def test_install_doc_lists_the_pinned_versions() -> None:
    doc = INSTALL_DOC.read_text()
    for dep in remote(chart_yaml()["dependencies"]):
        row = rf"`{re.escape(dep['name'])}`\s*\|\s*`?{re.escape(dep['version'])}`?\s*\|"
        assert re.search(row, doc), f"docs/install.md does not list {dep['name']} {dep['version']}"
