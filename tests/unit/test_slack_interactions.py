"""The HTTP interactivity endpoint, with Slack played by the fake and a stubbed decision path.

The real decision path (SubjectAccessReview, policy, audit) is exercised end to end in
tests/e2e; here `StubDecisions` stands in for it so every Slack-side check is pinned alone.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr
from tests.fakes.slack import Call, FakeSlack, StubDecisions, pending_request

from greenlight.adapters.slack import (
    DecisionsPort,
    RetryPolicy,
    SlackRuntime,
    interactions,
    start_slack,
)
from greenlight.adapters.slack.blocks import APPROVE_ACTION_ID, DENY_ACTION_ID
from greenlight.config import Settings
from greenlight.core.model import Action, Decision, Identity, Phase, RequestView, Via
from greenlight.telemetry import metrics

ALICE, BOB, EVE = "U0ALICE", "U0BOB", "U0EVE"


@dataclass
class Harness:
    slack: FakeSlack
    decisions: StubDecisions
    runtime: SlackRuntime

    async def post(self, request: RequestView) -> dict[str, Any]:
        """Announce `request` through the notifier; returns the message as Slack stored it."""
        self.decisions.add(request)
        ref = await self.runtime.notifier.notify(request)
        return next(m for m in self.slack.messages(ref.channel) if m["ts"] == ref.ref)

    def click(
        self, message: dict[str, Any], user: str, action_id: str, value: str = ""
    ) -> dict[str, Any]:
        button = next(
            e
            for b in message["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
            if e["action_id"] == action_id
        )
        return self.slack.block_actions(
            user=user,
            action_id=action_id,
            value=value or button["value"],
            channel="C0APPROVALS",
            message_ts=message["ts"],
        )

    async def send(self, payload: dict[str, Any], **sign: Any) -> int:
        status, _elapsed = await self.slack.deliver(
            self.runtime.interactions_url, self.slack.sign(payload, **sign)
        )
        return status

    async def told(self, user: str, contains: str) -> Call:
        return await self.slack.wait_for_call(
            "chat.postEphemeral", lambda c: c.args["user"] == user and contains in c.args["text"]
        )


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with FakeSlack() as slack:
        slack.add_user(ALICE, "alice@example.com")
        slack.add_user(BOB, "bob@example.com")
        slack.add_user(EVE, "eve@example.com")
        decisions = StubDecisions(allowed={"alice@example.com", "bob@example.com"})
        settings = Settings(
            slack_bot_token=SecretStr(slack.bot_token),
            slack_signing_secret=SecretStr(slack.signing_secret),
            slack_api_url=slack.api_url,
            slack_interactions_port=0,
            slack_default_channel="C0APPROVALS",
        )
        port = DecisionsPort(
            decisions.submit_decision, decisions.find_request_by_uid, decisions.record_audit
        )
        runtime = await start_slack(
            settings, port, host="127.0.0.1", retry=RetryPolicy(max_retries=1, backoff_factor=0.01)
        )
        try:
            yield Harness(slack, decisions, runtime)
        finally:
            await runtime.stop()


def _refused(reason: str) -> float:
    value = metrics.OPERATOR_REGISTRY.get_sample_value(
        "greenlight_decision_attempts_refused_total", {"reason": reason}
    )
    return value or 0.0


async def test_signed_approve_click_is_acknowledged_at_once_then_decided(harness: Harness) -> None:
    message = await harness.post(pending_request())
    harness.slack.delay("users.info", 2.0)  # slow work after the ack must not delay the ack
    status, elapsed = await harness.slack.deliver(
        harness.runtime.interactions_url,
        harness.slack.sign(harness.click(message, ALICE, APPROVE_ACTION_ID)),
    )
    assert status == 200
    assert elapsed < 1.0
    await harness.told(ALICE, "Recorded: you approved payments/destroy-prod-7x2k")
    ((ns, name, identity, action, reason, via),) = harness.decisions.submitted
    assert (ns, name, action, reason, via) == (
        "payments",
        "destroy-prod-7x2k",
        Action.APPROVE,
        "",
        Via.SLACK,
    )
    assert identity == Identity("alice@example.com", ("system:authenticated",))


async def test_deny_opens_a_modal_and_the_submitted_reason_denies(harness: Harness) -> None:
    message = await harness.post(pending_request())
    assert await harness.send(harness.click(message, BOB, DENY_ACTION_ID)) == 200
    await harness.slack.wait_for_call("views.open")
    (view,) = harness.slack.views
    assert harness.decisions.submitted == []
    submission = harness.slack.view_submission(user=BOB, view=view, reason="not during the freeze")
    assert await harness.send(submission) == 200
    await harness.told(BOB, "Recorded: you denied payments/destroy-prod-7x2k")
    ((_ns, _name, identity, action, reason, _via),) = harness.decisions.submitted
    assert (identity.user, action, reason) == (
        "bob@example.com",
        Action.DENY,
        "not during the freeze",
    )


async def test_user_without_rbac_is_refused_by_the_decision_path(harness: Harness) -> None:
    message = await harness.post(pending_request())
    assert await harness.send(harness.click(message, EVE, APPROVE_ACTION_ID)) == 200
    await harness.told(EVE, "Refused: eve@example.com may not approve")
    assert harness.decisions.requests[pending_request().uid].phase is Phase.PENDING


async def test_unknown_slack_user_is_refused_and_audited(harness: Harness) -> None:
    message = await harness.post(pending_request())
    before = _refused("unknown_user")
    assert await harness.send(harness.click(message, "U0STRANGER", APPROVE_ACTION_ID)) == 200
    await harness.told("U0STRANGER", "Refused: Slack does not know user U0STRANGER")
    assert harness.decisions.submitted == []
    (audit,) = harness.decisions.audits
    assert (audit["event"], audit["outcome"], audit["reason"]) == (
        "decision_attempted",
        "refused",
        "unknown_user",
    )
    assert audit["request"]["uid"] == pending_request().uid
    assert _refused("unknown_user") == before + 1


@pytest.mark.parametrize(
    ("sign", "reason"),
    [
        ({"secret": "not-the-signing-secret"}, "invalid_signature"),
        ({"timestamp": 1_000_000_000}, "stale_timestamp"),
    ],
)
async def test_forged_or_stale_requests_are_refused_and_audited(
    harness: Harness, sign: dict[str, Any], reason: str
) -> None:
    message = await harness.post(pending_request())
    before = _refused(reason)
    assert await harness.send(harness.click(message, ALICE, APPROVE_ACTION_ID), **sign) == 401
    await harness.decisions.wait_audited(reason)
    assert harness.decisions.submitted == []
    assert _refused(reason) == before + 1
    assert [a["reason"] for a in harness.decisions.audits] == [reason]


async def test_body_altered_after_signing_is_refused(harness: Harness) -> None:
    message = await harness.post(pending_request())
    signed = harness.slack.sign(harness.click(message, EVE, APPROVE_ACTION_ID))
    altered = type(signed)(signed.body.replace(EVE.encode(), ALICE.encode()), signed.headers)
    status, _ = await harness.slack.deliver(harness.runtime.interactions_url, altered)
    assert status == 401
    assert harness.decisions.submitted == []


async def test_replayed_payload_is_refused_and_audited(harness: Harness) -> None:
    message = await harness.post(pending_request(required_approvals=2))
    signed = harness.slack.sign(harness.click(message, ALICE, APPROVE_ACTION_ID))
    before = _refused("replayed")
    first, _ = await harness.slack.deliver(harness.runtime.interactions_url, signed)
    again, _ = await harness.slack.deliver(harness.runtime.interactions_url, signed)
    assert (first, again) == (200, 401)
    await harness.decisions.wait_audited("replayed")
    await harness.told(ALICE, "Recorded: you approved")
    assert len(harness.decisions.submitted) == 1
    assert _refused("replayed") == before + 1
    assert [a["reason"] for a in harness.decisions.audits] == ["replayed"]


async def test_tampered_token_is_refused_and_audited(harness: Harness) -> None:
    message = await harness.post(pending_request())
    value = harness.click(message, ALICE, APPROVE_ACTION_ID)["actions"][0]["value"]
    tampered = value[:20] + ("A" if value[20] != "A" else "B") + value[21:]
    before = _refused("invalid_token")
    assert await harness.send(harness.click(message, ALICE, APPROVE_ACTION_ID, tampered)) == 200
    await harness.told(ALICE, "Refused: This button was not issued by Greenlight")
    assert harness.decisions.submitted == []
    assert [a["reason"] for a in harness.decisions.audits] == ["invalid_token"]
    assert _refused("invalid_token") == before + 1


async def test_request_name_as_button_value_is_refused(harness: Harness) -> None:
    message = await harness.post(pending_request())
    payload = harness.click(message, ALICE, APPROVE_ACTION_ID, "payments/destroy-prod-7x2k")
    assert await harness.send(payload) == 200
    await harness.told(ALICE, "not issued by Greenlight")
    assert harness.decisions.submitted == []


async def test_deny_token_under_the_approve_button_is_refused(harness: Harness) -> None:
    message = await harness.post(pending_request())
    deny_value = harness.click(message, ALICE, DENY_ACTION_ID)["actions"][0]["value"]
    assert await harness.send(harness.click(message, ALICE, APPROVE_ACTION_ID, deny_value)) == 200
    await harness.told(ALICE, "not issued by Greenlight")
    assert harness.decisions.submitted == []


async def test_click_on_a_decided_request_says_who_decided(harness: Harness) -> None:
    message = await harness.post(pending_request())
    assert await harness.send(harness.click(message, ALICE, APPROVE_ACTION_ID)) == 200
    await harness.told(ALICE, "Recorded: you approved payments/destroy-prod-7x2k")
    assert await harness.send(harness.click(message, BOB, APPROVE_ACTION_ID)) == 200
    await harness.told(BOB, "already Approved by alice@example.com")


async def test_second_click_by_the_same_approver_is_already_recorded(harness: Harness) -> None:
    message = await harness.post(pending_request(required_approvals=2))
    assert await harness.send(harness.click(message, ALICE, APPROVE_ACTION_ID)) == 200
    await harness.told(ALICE, "(2 approvals required)")
    assert await harness.send(harness.click(message, ALICE, APPROVE_ACTION_ID)) == 200
    await harness.told(ALICE, "was already recorded")
    assert harness.decisions.requests[pending_request().uid].approvals == ("alice@example.com",)


async def test_deny_click_on_a_decided_request_opens_no_modal(harness: Harness) -> None:
    at = pending_request().expires_at
    assert at is not None
    message = await harness.post(pending_request())
    harness.decisions.add(
        pending_request(
            phase=Phase.DENIED, decision=Decision(Phase.DENIED, "bob", at, Via.KUBECTL, "no")
        )
    )
    assert await harness.send(harness.click(message, ALICE, DENY_ACTION_ID)) == 200
    await harness.told(ALICE, "already Denied by bob")
    assert harness.slack.calls_to("views.open") == []


async def test_deny_submission_with_forged_metadata_is_refused(harness: Harness) -> None:
    forged_view = {"callback_id": "greenlight_deny", "private_metadata": json.dumps({"token": "x"})}
    submission = harness.slack.view_submission(user=ALICE, view=forged_view, reason="because")
    assert await harness.send(submission) == 200
    await harness.decisions.wait_audited("invalid_token")
    assert [a["reason"] for a in harness.decisions.audits] == ["invalid_token"]
    assert harness.decisions.submitted == []


async def test_click_for_a_deleted_request_says_so(harness: Harness) -> None:
    message = await harness.post(pending_request())
    harness.decisions.requests.clear()
    assert await harness.send(harness.click(message, ALICE, APPROVE_ACTION_ID)) == 200
    await harness.told(ALICE, "no longer exists")
    assert harness.decisions.submitted == []


async def test_signed_body_that_is_not_an_interaction_is_a_bad_request(harness: Harness) -> None:
    request = harness.slack.sign_body(b"not-a-form")
    status, _ = await harness.slack.deliver(harness.runtime.interactions_url, request)
    assert status == 400
    assert harness.decisions.audits == []


async def _raw_post(url: str, headers: str, body: bytes = b"") -> tuple[Any, Any]:
    """A POST sent by hand (headers as given, then `body` and no more): reader and writer."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"POST {parts.path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body)
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize(
    "headers",
    ["", "X-Slack-Signature: v0=00\r\nX-Slack-Request-Timestamp: 1000000000\r\n"],
    ids=["unsigned", "stale"],
)
async def test_what_the_headers_refuse_is_refused_before_the_body_is_read(
    harness: Harness, headers: str
) -> None:
    reader, writer = await _raw_post(
        harness.runtime.interactions_url, headers + "Content-Length: 1000000\r\n"
    )  # and none of the body: the answer must not wait for it

    status = await asyncio.wait_for(reader.readline(), 2)

    assert status.startswith(b"HTTP/1.1 401")
    writer.close()


async def test_a_body_is_read_in_time_and_only_so_many_at_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interactions, "BODY_SECONDS", 0.5)
    monkeypatch.setattr(interactions, "MAX_BODIES_IN_FLIGHT", 2)
    fresh = (
        f"X-Slack-Signature: v0=00\r\nX-Slack-Request-Timestamp: {int(time.time())}\r\n"
        "Content-Length: 1000\r\n"
    )
    url = harness.runtime.interactions_url
    stalled = [await _raw_post(url, fresh, b"p" * 10) for _ in range(2)]
    await asyncio.sleep(0.1)

    reader, writer = await _raw_post(url, fresh, b"p" * 1000)  # a third, while two are read
    assert (await asyncio.wait_for(reader.readline(), 2)).startswith(b"HTTP/1.1 503")
    writer.close()
    for reader, writer in stalled:
        assert (await asyncio.wait_for(reader.readline(), 2)).startswith(b"HTTP/1.1 408")
        writer.close()
    assert harness.decisions.submitted == []
