"""The resilience tier: the operator and the API server are broken on purpose, mid-flight."""

from pathlib import Path

import pytest
from tests.resilience.cluster import without_shared_operator

__all__ = ["without_shared_operator"]

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.e2e)
