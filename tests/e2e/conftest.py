"""The end-to-end tier: `greenlight operator` as its own process, talking to a real API server,
a fake Slack and (for traces) a real OTLP receiver; people act through kubectl and Slack clicks.

Only one operator may own the admission webhooks at a time, so these fixtures stop the
session's shared console operator first (the `operator` fixture restarts it for later tests).
Every operator process started here has its whole log checked against the log contract when
it stops (tests/support/logcontract.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tests.fakes.slack import FakeSlack
from tests.support.approvals import Requests
from tests.support.kubectl import Kubectl
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People
from tests.support.slack_deployment import (
    SlackDeployment,
    slack_deployment,
    stop_shared_operator,
)

from greenlight.devcluster import ControlPlane

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module", params=["http", "socket"])
def slack_mode(request: pytest.FixtureRequest) -> str:
    """Both ways of receiving clicks pass the same tests."""
    return str(request.param)


@pytest.fixture(scope="module")
def slack_deployment_running(
    slack_mode: str,
    control_plane: ControlPlane,
    operator_process: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SlackDeployment]:
    """The operator with Slack in `slack_mode`, for a whole module of scenarios.

    People not in the mapping file are mapped by the local part of an `example.com` email."""
    stop_shared_operator(operator_process)
    workdir = tmp_path_factory.mktemp(f"operator-slack-{slack_mode}")
    env = {
        "GREENLIGHT_SLACK_USER_MAPPING": "email-localpart",
        "GREENLIGHT_SLACK_ALLOWED_EMAIL_DOMAINS": "example.com",
    }
    with slack_deployment(control_plane, workdir, slack_mode, env) as deployment:
        yield deployment
    deployment.log_records()


@pytest.fixture
def slack(slack_deployment_running: SlackDeployment) -> Iterator[SlackDeployment]:
    """The running Slack deployment; Slack is healthy again after each test."""
    deployment = slack_deployment_running
    if not deployment.operator.running:
        deployment.operator.start()
    yield deployment
    deployment.slack.read(FakeSlack.clear_faults)


@pytest.fixture
def requests(kubectl: Kubectl, people: People) -> Requests:
    return Requests(kubectl, people)


@pytest.fixture(scope="module")
def module_namespace(kube_client: Any) -> Iterator[str]:
    """A namespace for requests that live across the tests of a module."""
    name = f"e2e-{secrets.token_hex(4)}"
    core = client.CoreV1Api(kube_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
