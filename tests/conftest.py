"""Fixtures every tier may use; the control plane only starts for tests that ask for it."""

import sys
from pathlib import Path

# `tests.support` must import the same way under `pytest` and `python -m pytest`.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tests.support.fixtures import (  # noqa: E402
    control_plane,
    kube_client,
    kubectl,
    namespace,
)

__all__ = ["control_plane", "kube_client", "kubectl", "namespace"]

from tests.support.operator_fixtures import operator, operator_process, people  # noqa: E402

__all__ += ["operator", "operator_process", "people"]
