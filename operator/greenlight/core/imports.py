"""Importing a library without the part of it Greenlight never runs."""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator


@contextlib.contextmanager
def without_submodule(name: str) -> Iterator[None]:
    """Import, inside the block, the package that `name` belongs to while `name` stands for an
    empty module; then take that placeholder away again, so a later `import name` loads the
    real one. Nothing changes when the package is already imported.

    For a package whose `__init__` imports a submodule it does not need to work: `cel` imports
    `cel.cli`, its interactive REPL (typer, rich, prompt_toolkit, pygments), which is 0.7 s of
    every start of the operator and the CLI and 5 MiB of the operator's memory.
    """
    package, _, attribute = name.rpartition(".")
    if package in sys.modules or name in sys.modules:
        yield
        return
    placeholder = types.ModuleType(name)
    sys.modules[name] = placeholder
    try:
        yield
    finally:
        if sys.modules.get(name) is placeholder:
            del sys.modules[name]
        parent = sys.modules.get(package)
        if parent is not None and getattr(parent, attribute, None) is placeholder:
            delattr(parent, attribute)


@contextlib.contextmanager
def absent(*names: str) -> Iterator[None]:
    """Import, inside the block, as if the top-level packages `names` were not installed (an
    import of one raises ImportError); afterwards they import as usual. Packages already
    imported stay as they are.

    For libraries with optional integrations that a process never uses: kopf imports the
    official kubernetes client, when it is installed, only to accept its model objects (8 MiB
    of the operator's memory; the operator hands kopf dicts and logs in with
    `kube.operator_credentials`), and structlog imports rich, when it is installed, only to
    format tracebacks on a terminal (5 MiB with pygments).
    """
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not here"
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
