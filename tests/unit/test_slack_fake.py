"""The fake Slack server answers like Slack's documentation says, as slack_sdk sees it."""

from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from tests.fakes.slack import BOT_ID, FakeSlack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


def _client(slack: FakeSlack, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or slack.bot_token, base_url=slack.api_url, retry_handlers=[])


async def test_history_shows_metadata_only_when_asked(slack: FakeSlack) -> None:
    client = _client(slack)
    metadata = {"event_type": "greenlight_request", "event_payload": {"uid": "u1"}}
    posted = await client.chat_postMessage(channel="C1", text="hi", metadata=metadata)
    assert (posted["ok"], posted["channel"], posted["message"]["bot_id"]) == (True, "C1", BOT_ID)
    plain = await client.conversations_history(channel="C1")
    assert "metadata" not in plain["messages"][0]
    full = await client.conversations_history(channel="C1", include_all_metadata=True)
    assert full["messages"][0]["metadata"] == metadata


async def test_history_is_newest_first_and_paginated_by_cursor(slack: FakeSlack) -> None:
    for i in range(5):
        slack.post_from_someone_else("C1", f"m{i}")
    client = _client(slack)
    first = await client.conversations_history(channel="C1", limit=3)
    assert [m["text"] for m in first["messages"]] == ["m4", "m3", "m2"]
    assert first["has_more"] is True
    cursor = first["response_metadata"]["next_cursor"]
    rest = await client.conversations_history(channel="C1", limit=3, cursor=cursor)
    assert [m["text"] for m in rest["messages"]] == ["m1", "m0"]
    assert rest["has_more"] is False


async def test_thread_replies_stay_out_of_the_channel_history(slack: FakeSlack) -> None:
    client = _client(slack)
    root = await client.chat_postMessage(channel="C1", text="root")
    await client.chat_postMessage(channel="C1", text="reply", thread_ts=root["ts"])
    history = await client.conversations_history(channel="C1")
    assert [m["text"] for m in history["messages"]] == ["root"]
    thread = await client.conversations_replies(channel="C1", ts=root["ts"])
    assert [m["text"] for m in thread["messages"]] == ["root", "reply"]


async def test_wrong_tokens_are_refused_like_slack_does(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as bad:
        await _client(slack, "xoxb-wrong").auth_test()
    assert bad.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as wrong_kind:
        await _client(slack).apps_connections_open(app_token=slack.bot_token)
    assert wrong_kind.value.response["error"] == "not_allowed_token_type"


async def test_rate_limit_answers_429_with_retry_after(slack: FakeSlack) -> None:
    slack.fail("auth.test", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as limited:
        await _client(slack).auth_test()
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    assert (await _client(slack).auth_test())["ok"] is True


async def test_trigger_ids_are_single_use(slack: FakeSlack) -> None:
    payload = slack.block_actions(
        user="U1", action_id="a", value="v", channel="C1", message_ts="1.1"
    )
    view = {"type": "modal", "title": {"type": "plain_text", "text": "t"}, "blocks": []}
    client = _client(slack)
    assert (await client.views_open(trigger_id=payload["trigger_id"], view=view))["ok"] is True
    with pytest.raises(SlackApiError) as reused:
        await client.views_open(trigger_id=payload["trigger_id"], view=view)
    assert reused.value.response["error"] == "invalid_trigger_id"


def test_signatures_verify_with_slack_sdk() -> None:
    fake = FakeSlack(signing_secret="s3cret")
    signed = fake.sign({"type": "block_actions"}, timestamp=1_700_000_000)
    verifier = SignatureVerifier("s3cret")
    expected = verifier.generate_signature(timestamp="1700000000", body=signed.body)
    assert signed.headers["X-Slack-Signature"] == expected
