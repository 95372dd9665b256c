"""The integration tier: every test here runs against the real local control plane."""

from pathlib import Path

import pytest
from tests.support.identities import cli_for
from tests.support.operator import OperatorProcess

from greenlight.devcluster import ControlPlane

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def keys_file(operator: OperatorProcess, control_plane: ControlPlane, tmp_path: Path) -> Path:
    """The operator's public key, as `greenlight receipt keys` prints it from its key file."""
    done = cli_for(control_plane)(
        "receipt", "keys", "--key-file", str(operator.workdir / "receipt.key")
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / "keys.pem"
    path.write_text(done.stdout)
    return path
