"""The Slack notifier against the fake Slack server: post once, resolve, survive Slack trouble."""

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from tests.fakes.slack import FakeSlack, pending_request

from greenlight.adapters.notifiers import NotificationRef, NotifierError
from greenlight.adapters.slack import blocks
from greenlight.adapters.slack.client import RetryPolicy, build_client, open_session
from greenlight.adapters.slack.notifier import SlackNotifier
from greenlight.adapters.slack.tokens import TokenCodec
from greenlight.core.model import Action, Decision, Phase, Via

FAST = RetryPolicy(max_retries=3, backoff_factor=0.01, timeout_seconds=2)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


def _notifier(slack: FakeSlack, policy: RetryPolicy = FAST) -> SlackNotifier:
    client = build_client(slack.bot_token, slack.api_url, policy)
    return SlackNotifier(client, TokenCodec(slack.signing_secret), "C0DEFAULT")


async def test_notify_posts_one_message_with_buttons_and_uid_metadata(slack: FakeSlack) -> None:
    request = pending_request()
    ref = await _notifier(slack).notify(request)
    (message,) = slack.messages("C0APPROVALS")
    assert ref == NotificationRef(channel="C0APPROVALS", ref=message["ts"])
    assert message["metadata"] == {
        "event_type": "greenlight_request",
        "event_payload": {
            "uid": request.uid,
            "namespace": "payments",
            "name": "destroy-prod-7x2k",
            "phase": "Pending",
        },
    }
    buttons = next(b for b in message["blocks"] if b["type"] == "actions")["elements"]
    codec = TokenCodec(slack.signing_secret)
    assert [codec.verify(b["value"]).action for b in buttons] == [Action.APPROVE, Action.DENY]
    assert {codec.verify(b["value"]).uid for b in buttons} == {request.uid}


async def test_request_without_channel_goes_to_the_default_channel(slack: FakeSlack) -> None:
    ref = await _notifier(slack).notify(pending_request(slack_channel=""))
    assert ref.channel == "C0DEFAULT"
    assert len(slack.messages("C0DEFAULT")) == 1


async def test_crash_between_post_and_status_write_does_not_post_twice(slack: FakeSlack) -> None:
    request = pending_request()
    first = await _notifier(slack).notify(request)
    for i in range(300):  # later traffic pushes the message past the first history page
        slack.post_from_someone_else("C0APPROVALS", f"chatter {i}")
    # A restarted operator (new notifier, nothing cached) that never recorded `first`.
    second = await _notifier(slack).notify(request)
    assert second == first
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert len([m for m in slack.messages("C0APPROVALS") if m.get("bot_id")]) == 1


async def test_lost_post_response_is_found_instead_of_reposted(slack: FakeSlack) -> None:
    request = pending_request()
    notifier = _notifier(slack, RetryPolicy(max_retries=0, timeout_seconds=1))
    slack.delay("chat.postMessage", 2.0)  # Slack accepts the post; the answer never arrives in time
    with pytest.raises(NotifierError):
        await notifier.notify(request)
    ref = await _notifier(slack).notify(request)
    (message,) = slack.messages("C0APPROVALS")
    assert ref.ref == message["ts"]
    assert len(slack.calls_to("chat.postMessage")) == 1


async def test_metadata_from_another_app_or_request_is_not_mistaken_for_ours(
    slack: FakeSlack,
) -> None:
    request = pending_request()
    impostor = {"event_type": "greenlight_request", "event_payload": {"uid": request.uid}}
    slack.post_from_someone_else("C0APPROVALS", "spoof", metadata=impostor)
    await _notifier(slack).notify(pending_request(uid="another-uid"))
    ref = await _notifier(slack).notify(request)
    ours = [m for m in slack.messages("C0APPROVALS") if m.get("bot_id")]
    assert len(ours) == 2
    assert ref.ref == ours[-1]["ts"]


async def test_failed_history_lookup_posts_nothing(slack: FakeSlack) -> None:
    slack.fail("conversations.history", error="missing_scope")
    with pytest.raises(NotifierError, match="missing_scope"):
        await _notifier(slack).notify(pending_request())
    assert slack.calls_to("chat.postMessage") == []


async def test_rate_limit_storm_waits_for_retry_after_then_posts(slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", status=429, retry_after=1, times=2)
    ref = await _notifier(slack).notify(pending_request())
    attempts = slack.calls_to("chat.postMessage")
    assert [c.status for c in attempts] == [429, 429, 200]
    assert attempts[1].at - attempts[0].at >= 1.0
    assert attempts[2].at - attempts[1].at >= 1.0
    assert ref.ref == slack.messages("C0APPROVALS")[0]["ts"]


async def test_server_errors_are_retried_then_reported_as_notifier_error(slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", status=503, times=10)
    with pytest.raises(NotifierError, match="slack notify failed"):
        await _notifier(slack).notify(pending_request())
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [503] * 4
    assert slack.messages("C0APPROVALS") == []


async def test_transient_server_error_recovers_with_one_message(slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", status=502, times=2)
    await _notifier(slack).notify(pending_request())
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [502, 502, 200]
    assert len(slack.messages("C0APPROVALS")) == 1


async def test_outage_fails_fast_within_the_retry_budget(slack: FakeSlack) -> None:
    slack.outage = True
    started = time.perf_counter()
    with pytest.raises(NotifierError):
        await _notifier(slack).notify(pending_request())
    assert time.perf_counter() - started < 10


async def test_unreachable_slack_is_a_notifier_error() -> None:
    async with FakeSlack() as fake:
        url = fake.api_url
    client = build_client("xoxb-x", url, RetryPolicy(max_retries=1, backoff_factor=0.01))
    with pytest.raises(NotifierError):
        await SlackNotifier(client, TokenCodec("s"), "C1").notify(pending_request())


async def test_resolve_replaces_buttons_and_replies_once_in_the_thread(slack: FakeSlack) -> None:
    notifier = _notifier(slack)
    request = pending_request()
    ref = await notifier.notify(request)
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    done = pending_request(
        phase=Phase.APPROVED,
        approvals=("alice@example.com",),
        decision=Decision(Phase.APPROVED, "alice@example.com", at, Via.SLACK),
    )
    await notifier.resolve(done, ref)
    await notifier.resolve(done, ref)  # the operator retried after a crash
    (message,) = slack.messages("C0APPROVALS")
    assert not [b for b in message["blocks"] if b["type"] == "actions"]
    assert "*Approved* by *alice@example.com* via slack" in str(message["blocks"])
    assert message["metadata"]["event_payload"]["phase"] == "Approved"
    (reply,) = slack.replies("C0APPROVALS", ref.ref)
    assert reply["text"] == blocks.outcome_line(done)
    assert len(slack.calls_to("chat.update")) == 2


async def test_resolve_of_a_deleted_message_gives_up_quietly(slack: FakeSlack) -> None:
    await _notifier(slack).resolve(
        pending_request(phase=Phase.CANCELLED), NotificationRef("C0APPROVALS", "1.000001")
    )
    assert slack.calls_to("chat.postMessage") == []


async def test_resolve_during_an_outage_raises_for_a_later_retry(slack: FakeSlack) -> None:
    notifier = _notifier(slack)
    ref = await notifier.notify(pending_request())
    slack.outage = True
    with pytest.raises(NotifierError):
        await notifier.resolve(pending_request(phase=Phase.EXPIRED), ref)


async def test_calls_share_one_kept_alive_connection_with_the_operators_session(
    slack: FakeSlack,
) -> None:
    session = open_session(FAST)
    try:
        client = build_client(slack.bot_token, slack.api_url, FAST, session)
        notifier = SlackNotifier(client, TokenCodec(slack.signing_secret), "C0DEFAULT")
        for number in range(3):
            await notifier.notify(pending_request(name=f"r{number}", uid=f"uid-{number}"))
    finally:
        await session.close()
    posts = slack.calls_to("chat.postMessage")
    assert len(posts) == 3
    assert len({call.peer for call in posts}) == 1  # no new connection (and handshake) per call


async def test_without_a_session_each_call_opens_its_own_connection(slack: FakeSlack) -> None:
    notifier = _notifier(slack)
    for number in range(3):
        await notifier.notify(pending_request(name=f"r{number}", uid=f"uid-{number}"))
    assert len({call.peer for call in slack.calls_to("chat.postMessage")}) == 3


async def test_a_fresh_request_is_posted_without_reading_the_history(slack: FakeSlack) -> None:
    await _notifier(slack).notify(pending_request(), fresh=True)

    assert slack.calls_to("conversations.history") == []
    assert len(slack.messages("C0APPROVALS")) == 1


async def test_a_retry_that_is_not_fresh_finds_the_message_a_fresh_try_posted(
    slack: FakeSlack,
) -> None:
    """The fresh try's answer was lost (a timeout after Slack stored the message): the retry
    looks the history up and reuses the message."""
    notifier = _notifier(slack)
    first = await notifier.notify(pending_request(), fresh=True)
    again = await notifier.notify(pending_request())

    assert again == first
    assert len(slack.messages("C0APPROVALS")) == 1
    assert len(slack.calls_to("conversations.history")) == 1
