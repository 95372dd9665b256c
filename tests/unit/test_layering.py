"""What each entry point pulls in: the SDK nothing of the operator, production no dev tooling."""

from __future__ import annotations

import subprocess
import sys

import pytest


def modules_loaded_by(statement: str) -> set[str]:
    program = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
    )
    return {name for name in done.stdout.split() if name.startswith("greenlight")}


def test_the_sdk_imports_nothing_from_the_operator() -> None:
    loaded = modules_loaded_by("import greenlight; from greenlight.client import ApprovalClient")

    assert "greenlight.kube" in loaded
    assert not {m for m in loaded if m.startswith(("greenlight.adapters", "greenlight.app"))}
    assert not {m for m in loaded if m.startswith("greenlight.devcluster")}


def test_the_operator_makes_certificates_without_the_local_control_plane() -> None:
    loaded = modules_loaded_by("import greenlight.app")

    assert "greenlight.pki" in loaded
    assert not {m for m in loaded if m.startswith("greenlight.devcluster")}


@pytest.mark.parametrize("entry", ["greenlight.cli", "greenlight.kube", "greenlight.config"])
def test_no_production_module_imports_the_local_control_plane(entry: str) -> None:
    loaded = modules_loaded_by(f"import {entry}")

    assert not {m for m in loaded if m.startswith("greenlight.devcluster")}


def _package_imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a `from pkg import submodule` names the
    submodule, not the package)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "operator"
    modules = {
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (root / "greenlight").rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("greenlight"):
                base = str(node.module)
                subs = {f"{base}.{alias.name}" for alias in node.names}
                found |= (subs & modules.keys()) or {base}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("greenlight")}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_the_package_has_no_import_circle() -> None:
    graph = _package_imports()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        for target in sorted(graph[module]):
            assert target not in path, " -> ".join((*path[path.index(target) :], target))
            if target not in done:
                visit(target, (*path, target))
        done.add(module)

    for module in sorted(graph):
        visit(module, (module,))
