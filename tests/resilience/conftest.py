"""The resilience tier: the operator and the API server are broken on purpose, mid-flight."""

from pathlib import Path

import pytest
from tests.support.operator import OperatorProcess

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def without_shared_operator(operator_process: OperatorProcess) -> None:
    """For tests that run their own operator processes: the session's operator must not
    reconcile the same objects meanwhile. It is stopped now; the `operator` fixture starts it
    again (re-pointing the webhooks at itself) for whichever test needs it next."""
    operator_process.kill()
