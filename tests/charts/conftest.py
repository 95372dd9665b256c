"""The umbrella chart built once per session with its real dependencies, rendered per profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.charts.render import umbrella
from tests.charts.stack import StackRenders


@pytest.fixture(scope="session")
def stack_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The umbrella with every dependency fetched by ``helm dependency build``."""
    return umbrella(tmp_path_factory.mktemp("umbrella"))


@pytest.fixture(scope="session")
def stack_renders(stack_chart: Path) -> StackRenders:
    return StackRenders(stack_chart)


@pytest.fixture(scope="session")
def stack(stack_renders: StackRenders) -> list[dict[str, Any]]:
    """The umbrella rendered with its default values."""
    return stack_renders("defaults")
