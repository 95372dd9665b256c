"""Socket Mode: the same clicks, over the WebSocket the operator opens to (fake) Slack."""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pydantic import SecretStr
from tests.fakes.slack import FakeSlack, StubDecisions, pending_request

from greenlight.adapters.slack import (
    DecisionsPort,
    RetryPolicy,
    SlackConfigError,
    SlackRuntime,
    start_slack,
)
from greenlight.adapters.slack.blocks import APPROVE_ACTION_ID, DENY_ACTION_ID
from greenlight.config import Settings
from greenlight.core.model import Action, Phase


@dataclass
class Socket:
    slack: FakeSlack
    decisions: StubDecisions
    runtime: SlackRuntime


def _settings(slack: FakeSlack, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "slack_bot_token": SecretStr(slack.bot_token),
        "slack_signing_secret": SecretStr(slack.signing_secret),
        "slack_app_token": SecretStr(slack.app_token),
        "slack_mode": "socket",
        "slack_api_url": slack.api_url,
        "slack_default_channel": "C0APPROVALS",
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
async def socket() -> AsyncIterator[Socket]:
    async with FakeSlack() as slack:
        slack.add_user("U0ALICE", "alice@example.com")
        decisions = StubDecisions(allowed={"alice@example.com"})
        port = DecisionsPort(
            decisions.submit_decision, decisions.find_request_by_uid, decisions.record_audit
        )
        runtime = await start_slack(
            _settings(slack), port, retry=RetryPolicy(max_retries=1, backoff_factor=0.01)
        )
        try:
            yield Socket(slack, decisions, runtime)
        finally:
            await runtime.stop()


def _button(message: dict[str, object], action_id: str) -> str:
    blocks = message["blocks"]
    assert isinstance(blocks, list)
    actions = next(b for b in blocks if b["type"] == "actions")
    return str(next(e["value"] for e in actions["elements"] if e["action_id"] == action_id))


async def test_socket_mode_connects_with_the_app_token(socket: Socket) -> None:
    await socket.slack.wait_for_socket()
    (call,) = socket.slack.calls_to("apps.connections.open")
    assert call.token == socket.slack.app_token
    assert socket.runtime.interactions_url == ""


async def test_click_over_the_socket_is_acked_and_decided(socket: Socket) -> None:
    request = socket.decisions.add(pending_request())
    ref = await socket.runtime.notifier.notify(request)
    (message,) = socket.slack.messages(ref.channel)
    click = socket.slack.block_actions(
        user="U0ALICE",
        action_id=APPROVE_ACTION_ID,
        value=_button(message, APPROVE_ACTION_ID),
        channel=ref.channel,
        message_ts=ref.ref,
    )
    ack = await socket.slack.push(click, envelope_id="env-1")
    assert ack == {"envelope_id": "env-1"}
    await socket.slack.wait_for_call(
        "chat.postEphemeral", lambda c: "Recorded: you approved" in c.args["text"]
    )
    assert socket.decisions.requests[request.uid].phase is Phase.APPROVED
    ((_ns, _name, identity, action, _reason, _via),) = socket.decisions.submitted
    assert (identity.user, action) == ("alice@example.com", Action.APPROVE)


async def test_redelivered_envelope_is_acked_but_handled_once(socket: Socket) -> None:
    request = socket.decisions.add(pending_request())
    ref = await socket.runtime.notifier.notify(request)
    (message,) = socket.slack.messages(ref.channel)
    value = _button(message, APPROVE_ACTION_ID)

    def click(user: str) -> dict[str, object]:
        return socket.slack.block_actions(
            user=user,
            action_id=APPROVE_ACTION_ID,
            value=value,
            channel=ref.channel,
            message_ts=ref.ref,
        )

    await socket.slack.push(click("U0ALICE"), envelope_id="env-2")
    assert await socket.slack.push(click("U0ALICE"), envelope_id="env-2") == {
        "envelope_id": "env-2"
    }
    # A later envelope from someone else marks the point by which a duplicate would have run.
    await socket.slack.push(click("U0NOBODY"), envelope_id="env-3")
    await socket.slack.wait_for_call("chat.postEphemeral", lambda c: c.args["user"] == "U0NOBODY")
    await socket.slack.wait_for_call("chat.postEphemeral", lambda c: c.args["user"] == "U0ALICE")
    assert len(socket.decisions.submitted) == 1
    assert (
        len([c for c in socket.slack.calls_to("chat.postEphemeral") if c.args["user"] == "U0ALICE"])
        == 1
    )


async def test_deny_modal_round_trip_over_the_socket(socket: Socket) -> None:
    request = socket.decisions.add(pending_request())
    ref = await socket.runtime.notifier.notify(request)
    (message,) = socket.slack.messages(ref.channel)
    click = socket.slack.block_actions(
        user="U0ALICE",
        action_id=DENY_ACTION_ID,
        value=_button(message, DENY_ACTION_ID),
        channel=ref.channel,
        message_ts=ref.ref,
    )
    await socket.slack.push(click)
    await socket.slack.wait_for_call("views.open")
    (view,) = socket.slack.views
    await socket.slack.push(
        socket.slack.view_submission(user="U0ALICE", view=view, reason="freeze")
    )
    await socket.slack.wait_for_call(
        "chat.postEphemeral", lambda c: "Recorded: you denied" in c.args["text"]
    )
    assert socket.decisions.requests[request.uid].decision is not None


async def test_socket_mode_without_an_app_token_names_the_variable() -> None:
    async with FakeSlack() as slack:
        decisions = StubDecisions()
        port = DecisionsPort(
            decisions.submit_decision, decisions.find_request_by_uid, decisions.record_audit
        )
        with pytest.raises(SlackConfigError, match="GREENLIGHT_SLACK_APP_TOKEN"):
            await start_slack(_settings(slack, slack_app_token=None), port)
