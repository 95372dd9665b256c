"""The operator process wired to the fake Slack, in HTTP or Socket Mode, as people deploy it.

`slack_deployment(...)` starts the fake Slack (its own thread), writes the user mapping file,
and starts `greenlight operator` with the Slack settings of docs/slack.md pointing at the fake.
The returned `SlackDeployment` plays the people in the channel: it finds the message for a
request, clicks its buttons and submits the deny form — signed and POSTed to the interactions
endpoint in `http` mode, pushed over the WebSocket in `socket` mode — and reads what they see.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.fakes.slack import BOT_ID, Call, FakeSlack, Payload, SignedRequest
from tests.support.logcontract import check_lines
from tests.support.manifests import poll
from tests.support.operator import OperatorProcess
from tests.support.slack_service import SlackService

from greenlight.adapters.slack.blocks import APPROVE_ACTION_ID, DENY_ACTION_ID
from greenlight.devcluster import ControlPlane
from greenlight.devcluster.controlplane import free_port

CHANNEL = "C0123456"
# Slack user id -> the Kubernetes user the mapping file names (People in operator_fixtures).
SLACK_USERS = {
    "U0ALICE01": "alice",
    "U0BOB0001": "bob",
    "U0CAROL01": "carol",
    "U0MALLORY": "mallory",
}
SLACK_ID = {user: slack_id for slack_id, user in SLACK_USERS.items()}
STRANGER = "U0STRANGER"  # in no mapping, unknown to Slack's users.info


@dataclass(frozen=True)
class Credentials:
    """Fresh, recognisable secrets per deployment, so a leak into any log can be searched for."""

    bot_token: str
    signing_secret: str
    app_token: str

    @classmethod
    def fresh(cls) -> Credentials:
        return cls(
            bot_token=f"xoxb-{secrets.randbelow(10**12):012d}-{secrets.token_hex(12)}",
            signing_secret=secrets.token_hex(16),
            app_token=f"xapp-1-A0FAKE0001-{secrets.token_hex(12)}",
        )

    @property
    def all(self) -> tuple[str, str, str]:
        return (self.bot_token, self.signing_secret, self.app_token)


@dataclass(frozen=True)
class SlackDeployment:
    mode: str  # "http" | "socket"
    slack: SlackService
    operator: OperatorProcess
    credentials: Credentials
    interactions_url: str  # "" in Socket Mode

    @property
    def fake(self) -> FakeSlack:
        return self.slack.fake

    # -- what the channel shows -------------------------------------------------------------

    def messages_for(self, uid: str, channel: str = CHANNEL) -> list[Payload]:
        """Top-level messages the app posted in `channel` for the request with `uid` (copies:
        what a person saw then, unchanged by later edits)."""
        return self.slack.read(
            lambda fake: [
                copy.deepcopy(m)
                for m in fake.messages(channel)
                if m.get("bot_id") == BOT_ID
                and (m.get("metadata") or {}).get("event_payload", {}).get("uid") == uid
            ]
        )

    def message_for(self, uid: str, channel: str = CHANNEL, timeout: float = 20.0) -> Payload:
        """The one message for the request, waiting for it to be posted."""
        found: list[Payload] = poll(lambda: self.messages_for(uid, channel), timeout)
        assert len(found) == 1, f"{len(found)} messages for {uid}: {found}"
        return found[0]

    def replies(self, ts: str, channel: str = CHANNEL) -> list[Payload]:
        return self.slack.read(lambda fake: copy.deepcopy(fake.replies(channel, ts)))

    def calls(self, method: str) -> list[Call]:
        return self.slack.read(lambda fake: fake.calls_to(method))

    def ephemerals(self, slack_user: str) -> list[str]:
        return [
            str(call.args.get("text", ""))
            for call in self.calls("chat.postEphemeral")
            if call.args.get("user") == slack_user and call.status == 200
        ]

    def wait_ephemeral(self, slack_user: str, contains: str, timeout: float = 15.0) -> str:
        """The first ephemeral message to `slack_user` containing `contains`."""
        texts: list[str] = poll(
            lambda: [t for t in self.ephemerals(slack_user) if contains in t], timeout
        )
        return texts[0]

    def updated(self, ts: str, channel: str = CHANNEL, timeout: float = 20.0) -> Payload:
        """The message once the operator rewrote it (chat.update), waiting for that."""

        def edited() -> Payload | None:
            messages = self.slack.read(lambda fake: fake.messages(channel))
            message = next((m for m in messages if m["ts"] == ts), None)
            return copy.deepcopy(message) if message is not None and "edited" in message else None

        found: Payload = poll(edited, timeout)
        return found

    def log_records(self) -> list[dict[str, Any]]:
        """Every line the operator printed, checked against the log contract (no secret in
        any of them); returns the parsed records."""
        return check_lines(
            self.operator.log_lines(), self.credentials.all, str(self.operator.log_file)
        )

    # -- what people do ---------------------------------------------------------------------

    def click(self, slack_user: str, message: Payload, action_id: str, value: str = "") -> int:
        """Click a button of `message` (its own value unless `value` is given).

        Returns the HTTP status of the interactions endpoint (http), or 200 once the
        operator acknowledged the envelope (socket).
        """
        payload = self.slack.read(
            lambda fake: fake.block_actions(
                user=slack_user,
                action_id=action_id,
                value=value or button(message, action_id),
                channel=CHANNEL,
                message_ts=str(message["ts"]),
            )
        )
        return self.send(payload)

    def deny_with_reason(self, slack_user: str, message: Payload, reason: str) -> int:
        """Deny: click Deny, wait for the form Slack opens, type the reason and submit."""
        opened = len(self.slack.read(lambda fake: fake.views))
        assert self.click(slack_user, message, DENY_ACTION_ID) == 200
        views: list[Payload] = poll(
            lambda: self.slack.read(lambda fake: fake.views)[opened:], timeout=15
        )
        submission = self.slack.read(
            lambda fake: fake.view_submission(user=slack_user, view=views[0], reason=reason)
        )
        return self.send(submission)

    def send(self, payload: Payload) -> int:
        """Deliver an interaction payload the way this mode receives it."""
        if self.mode == "socket":
            ack = self.slack.run(self.fake.push(payload, within=10))
            assert "envelope_id" in ack, ack
            return 200
        return self.post(self.slack.read(lambda fake: fake.sign(payload)))

    def post(self, request: SignedRequest) -> int:
        """POST a (possibly forged) signed request to the interactions endpoint (http mode)."""
        assert self.mode == "http", "only the HTTP endpoint checks request signatures"
        status, _seconds = self.slack.run(self.fake.deliver(self.interactions_url, request))
        return status


def button(message: Payload, action_id: str) -> str:
    """The value (token) behind a button of a posted message."""
    for block in message.get("blocks") or []:
        if block.get("type") == "actions":
            for element in block["elements"]:
                if element.get("action_id") == action_id:
                    return str(element["value"])
    raise AssertionError(f"message {message.get('ts')} has no {action_id} button")


def has_buttons(message: Payload) -> bool:
    return any(block.get("type") == "actions" for block in message.get("blocks") or [])


def text_of(message: Payload) -> str:
    """Everything a person reads in the message: fallback text and every text in its blocks."""
    parts = [str(message.get("text", ""))]

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            if isinstance(value.get("text"), str):
                parts.append(value["text"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(message.get("blocks") or [])
    return "\n".join(parts)


def stop_shared_operator(operator_process: OperatorProcess) -> None:
    """Hand the webhooks over: stop the session's console operator, and hold what it printed
    to the same log contract as every other operator process of this tier."""
    operator_process.stop()
    check_lines(operator_process.log_lines(), (), str(operator_process.log_file))


@contextmanager
def slack_deployment(
    plane: ControlPlane,
    workdir: Path,
    mode: str,
    env: Mapping[str, str] | None = None,
) -> Iterator[SlackDeployment]:
    """The fake Slack and an operator using it, for the duration of the block."""
    credentials = Credentials.fresh()
    workdir.mkdir(parents=True, exist_ok=True)
    user_map = workdir / "slack-users.yaml"
    user_map.write_text(yaml.safe_dump(SLACK_USERS))
    with SlackService(
        bot_token=credentials.bot_token,
        app_token=credentials.app_token,
        signing_secret=credentials.signing_secret,
    ) as slack:
        port = free_port()
        operator = OperatorProcess(
            plane,
            workdir,
            env={
                "GREENLIGHT_SLACK_BOT_TOKEN": credentials.bot_token,
                "GREENLIGHT_SLACK_SIGNING_SECRET": credentials.signing_secret,
                "GREENLIGHT_SLACK_APP_TOKEN": credentials.app_token,
                "GREENLIGHT_SLACK_MODE": mode,
                "GREENLIGHT_SLACK_API_URL": slack.fake.api_url,
                "GREENLIGHT_SLACK_DEFAULT_CHANNEL": CHANNEL,
                "GREENLIGHT_SLACK_INTERACTIONS_HOST": "127.0.0.1",
                "GREENLIGHT_SLACK_INTERACTIONS_PORT": str(port),
                "GREENLIGHT_SLACK_USER_MAP_FILE": str(user_map),
                **(env or {}),
            },
        )
        operator.start()
        deployment = SlackDeployment(
            mode=mode,
            slack=slack,
            operator=operator,
            credentials=credentials,
            interactions_url=(
                f"http://127.0.0.1:{port}/slack/interactions" if mode == "http" else ""
            ),
        )
        try:
            if mode == "socket":
                slack.run(slack.fake.wait_for_socket(within=15))
            yield deployment
        finally:
            operator.stop()


def wait_socket_again(deployment: SlackDeployment, since: float, timeout: float = 20.0) -> None:
    """After an operator restart in Socket Mode: wait until it opened a new connection."""
    if deployment.mode != "socket":
        return
    poll(lambda: [c for c in deployment.calls("apps.connections.open") if c.at > since], timeout)
    deployment.slack.run(deployment.fake.wait_for_socket(within=timeout))


__all__ = [
    "APPROVE_ACTION_ID",
    "CHANNEL",
    "DENY_ACTION_ID",
    "SLACK_ID",
    "STRANGER",
    "Credentials",
    "SlackDeployment",
    "button",
    "has_buttons",
    "slack_deployment",
    "stop_shared_operator",
    "text_of",
    "wait_socket_again",
]
