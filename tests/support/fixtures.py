"""Pytest fixtures for the tiers that need a real API server (integration and e2e).

One control plane serves the whole session (it starts in a few seconds); each test gets its
own namespace. Everything talks to it through an explicit kubeconfig, so a developer's own
cluster in ``~/.kube/config`` or ``KUBECONFIG`` is never touched.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tests.support.kubectl import Kubectl

from greenlight.devcluster import ControlPlane, install

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
CLUSTER_ROLES = REPO / "helm" / "greenlight" / "files" / "clusterroles.yaml"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """kube-apiserver + etcd with Greenlight's CRD and ClusterRoles installed.

    Its logs stay in pytest's temporary directory (``kube-apiserver.log``, ``etcd.log``).
    """
    with ControlPlane(tmp_path_factory.mktemp("control-plane")) as plane:
        install(plane.kubeconfig, [CRDS, CLUSTER_ROLES])
        yield plane


@pytest.fixture(scope="session")
def kube_client(control_plane: ControlPlane) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` authenticated as the admin."""
    api = control_plane.api_client()
    yield api
    api.close()


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return Kubectl(control_plane.kubeconfig)


@pytest.fixture
def namespace(kube_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test.

    It is deleted afterwards without waiting: no namespace controller runs, so it stays
    Terminating (with its objects) until the control plane stops.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    core = client.CoreV1Api(kube_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
