"""Reminders and escalation end to end: a cluster policy's schedule, the operator as its own
process with the fake Slack, kill -9 in the middle.

GREENLIGHT_FOLLOW_UP_SCALE=60 runs the policy's minutes as seconds: "remind every 5m" is a
reminder every 5 s, "escalate after 10m" an escalation after 10 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.approvals import Requests
from tests.support.kubectl import Kubectl
from tests.support.manifests import poll
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People
from tests.support.scrape import scrape
from tests.support.slack_deployment import (
    SlackDeployment,
    slack_deployment,
    stop_shared_operator,
)

from greenlight.devcluster import ControlPlane

ESCALATION_CHANNEL = "C0ONCALL1"
ONCALL_GROUP = "S0ONCALL1"
SCALE = 60


@pytest.fixture(scope="module")
def deployment(
    control_plane: ControlPlane,
    operator_process: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SlackDeployment]:
    stop_shared_operator(operator_process)
    workdir = tmp_path_factory.mktemp("operator-follow-ups")
    env = {
        "GREENLIGHT_SLACK_USER_MAPPING": "email-localpart",
        "GREENLIGHT_SLACK_ALLOWED_EMAIL_DOMAINS": "example.com",
        "GREENLIGHT_FOLLOW_UP_SCALE": str(SCALE),
    }
    with slack_deployment(control_plane, workdir, "http", env) as running:
        yield running


@pytest.fixture
def schedule(people: People, kubectl: Kubectl) -> Iterator[str]:
    """Remind every 5m; after 10m announce in the on-call channel and mention its group."""
    name = f"{people.namespace}-follow-ups"
    policy = {
        "apiVersion": "greenlight.dev/v1alpha1",
        "kind": "ClusterApprovalPolicy",
        "metadata": {"name": name},
        "spec": {
            "match": {
                "namespaces": {"matchLabels": {"kubernetes.io/metadata.name": people.namespace}}
            },
            "reminders": {"every": "5m"},
            "escalation": [
                {
                    "after": "10m",
                    "notify": {"slack": [ESCALATION_CHANNEL]},
                    "mention": {"slackUserGroups": [ONCALL_GROUP]},
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(policy))
    yield name
    kubectl("delete", "clusterapprovalpolicy", name, "--ignore-not-found")


def follow_up_keys(deployment: SlackDeployment, ts: str, channel: str | None = None) -> list[str]:
    replies = deployment.replies(ts, channel) if channel else deployment.replies(ts)
    return [
        str(((r.get("metadata") or {}).get("event_payload") or {}).get("key"))
        for r in replies
        if (r.get("metadata") or {}).get("event_type") == "greenlight_follow_up"
    ]


def created_under_policy(requests: Requests, name: str) -> str:
    """Create until the stamp shows the policy (it reaches the webhook through a watch)."""

    def attempt() -> str | None:
        uid = requests.create(name)
        status = requests.wait(name, lambda s: bool(s.get("phase")))
        if (status.get("policy") or {}).get("reminders"):
            return uid
        requests.kubectl("-n", requests.people.namespace, "delete", "apr", name, "--wait=true")
        return None

    uid: str = poll(attempt, timeout=30, interval=0.5)
    return uid


def test_reminders_and_escalation_follow_the_policy_across_a_kill(
    deployment: SlackDeployment, schedule: str, kubectl: Kubectl, people: People
) -> None:
    requests = Requests(kubectl, people)
    uid = created_under_policy(requests, "slow")
    requests.notified("slow")
    message = deployment.message_for(uid)

    poll(lambda: "reminder-1" in follow_up_keys(deployment, message["ts"]), 15)
    deployment.operator.kill()  # kill -9 with the schedule half done
    time.sleep(3)
    deployment.operator.start()

    escalated: list[Any] = poll(lambda: deployment.messages_for(uid, ESCALATION_CHANNEL), 25)
    assert len(escalated) == 1, "the request is announced once in the escalation channel"
    mention = poll(
        lambda: [
            r
            for r in deployment.replies(escalated[0]["ts"], ESCALATION_CHANNEL)
            if f"<!subteam^{ONCALL_GROUP}>" in r.get("text", "")
        ],
        15,
    )
    assert "Escalation 1" in mention[0]["text"]
    poll(lambda: "reminder-2" in follow_up_keys(deployment, message["ts"]), 15)

    keys = follow_up_keys(deployment, message["ts"])
    assert len(keys) == len(set(keys)), f"a follow-up was posted twice: {keys}"
    assert "escalation-1" in keys

    status = requests.status_of("slow")
    assert status["followUps"]["escalations"] == 1
    assert status["followUps"]["reminders"] >= 2
    reminded = [
        r
        for r in deployment.operator.audit_records()
        if r["event"] == "reminded" and r["request"]["uid"] == uid
    ]
    assert {r["details"]["step"] for r in reminded} >= {"reminder-1", "reminder-2"}
    assert any(
        r["event"] == "escalated" and r["request"]["uid"] == uid
        for r in deployment.operator.audit_records()
    )
    sent = scrape(deployment.operator.metrics_port)
    assert sent.value("greenlight_follow_ups_total", kind="reminder", channel="slack") >= 2

    requests.annotate("slow", "greenlight.dev/decision=approve", as_user="alice")
    requests.phase("slow", "Approved")
    settled = len(follow_up_keys(deployment, message["ts"]))
    time.sleep(6)  # longer than one reminder interval
    assert len(follow_up_keys(deployment, message["ts"])) == settled, "a decision stops them"
