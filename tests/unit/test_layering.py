"""What each entry point pulls in: the SDK nothing of the operator, production no dev tooling."""

from __future__ import annotations

import subprocess
import sys

import pytest


def modules_loaded_by(statement: str, prefix: str = "greenlight") -> set[str]:
    program = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
    )
    return {name for name in done.stdout.split() if name.startswith(prefix)}


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


REPL = ("cel.cli", "prompt_toolkit", "typer")


@pytest.mark.parametrize("entry", ["greenlight.cli", "greenlight.app"])
def test_cel_is_loaded_without_its_repl(entry: str) -> None:
    loaded = modules_loaded_by(f"import {entry}", prefix="")

    assert {"cel", "greenlight.core.conditions"} <= loaded
    assert not {m for m in loaded if m.startswith(REPL)}


def test_cel_s_repl_still_imports_after_greenlight_loaded_cel() -> None:
    loaded = modules_loaded_by(
        "import greenlight.core.conditions\nimport cel.cli\nassert cel.cli.app is not None",
        prefix="",
    )

    assert {"cel.cli", "prompt_toolkit"} <= loaded


def test_the_cli_loads_the_sdk_only_when_a_command_uses_it() -> None:
    sdk = {"greenlight.client", "greenlight.agent"}
    assert not modules_loaded_by("import greenlight.cli") & sdk
    loaded = modules_loaded_by("from greenlight import ApprovalClient, Phase, Workflow, task")
    assert {*sdk, "greenlight.core.model"} <= loaded


def test_a_name_the_sdk_does_not_have_is_an_attribute_error() -> None:
    import greenlight

    with pytest.raises(AttributeError, match="has no attribute 'Approve'"):
        greenlight.Approve  # noqa: B018  # type: ignore[attr-defined]
    assert greenlight.Phase.APPROVED.value == "Approved"


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


OPERATOR_IMPORT = (
    "from greenlight.core.imports import absent\n"
    "with absent('kubernetes', 'rich'):\n"
    "    import greenlight.app\n"
)
NOT_IN_THE_OPERATOR = {"kubernetes", "rich", "pygments", "google", "requests", "urllib3"}


def test_the_operator_runs_without_the_official_client_rich_or_the_otlp_exporter() -> None:
    """As `greenlight operator` imports it (cli._operator): nothing of the operator needs the
    official client, and tracing without an exporter configured needs no protobuf."""
    loaded = modules_loaded_by(OPERATOR_IMPORT, prefix="")

    assert {"greenlight.app", "kopf", "structlog"} <= loaded
    assert not {m for m in loaded if m.split(".")[0] in NOT_IN_THE_OPERATOR}


def test_packages_kept_absent_import_as_usual_afterwards() -> None:
    loaded = modules_loaded_by(OPERATOR_IMPORT + "import kubernetes.client, rich", prefix="")

    assert {"kubernetes.client", "rich"} <= loaded


def test_an_absent_package_cannot_be_imported_inside_the_block() -> None:
    program = (
        "from greenlight.core.imports import absent\n"
        "with absent('rich'):\n"
        "    try:\n"
        "        import rich.console\n"
        "    except ImportError:\n"
        "        print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )

    assert done.stdout.strip() == "refused"


def test_a_package_already_imported_is_left_alone() -> None:
    from greenlight.core.imports import absent

    with absent("json"):
        import json

        assert json.dumps(1) == "1"
    assert sys.modules["json"] is json
