"""Fixtures for the observability tests: the pinned promtool and amtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.observability.shipped_files import PROM_INSTALL


@pytest.fixture(scope="session")
def prom_tools_dir() -> Path:
    """The directory hack/prom/install.sh builds (or finds cached) promtool and amtool in."""
    result = subprocess.run(["bash", str(PROM_INSTALL)], check=True, capture_output=True, text=True)
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def promtool(prom_tools_dir: Path) -> Path:
    return prom_tools_dir / "promtool"


@pytest.fixture(scope="session")
def amtool(prom_tools_dir: Path) -> Path:
    return prom_tools_dir / "amtool"
