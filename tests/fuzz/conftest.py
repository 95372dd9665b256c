"""The fuzz tier: generated input against the pure core, the API server and the operator."""

from pathlib import Path

import pytest
from tests.resilience.cluster import without_shared_operator

__all__ = ["without_shared_operator"]
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents and "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
