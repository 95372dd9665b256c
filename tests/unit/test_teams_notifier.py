"""The Teams notifier (teams/notifier.py) and its card journal, against the fake Teams.

"A restart" is a new notifier over the same journal directory, as a new operator process (or the
standby replica, which shares the volume) would build it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.fakes.slack import pending_request
from tests.fakes.teams import CONVERSATION, TENANT_ID, FakeTeams, find_action, has_actions, text_of

from greenlight.adapters.notifiers import FollowUp, NotificationRef, NotifierError
from greenlight.adapters.teams.connector import AppTokens, BotConnector, RetryPolicy
from greenlight.adapters.teams.journal import CardJournal, State
from greenlight.adapters.teams.notifier import TeamsNotifier
from greenlight.adapters.teams.serviceurls import ServiceUrls
from greenlight.adapters.teams.tokens import CardTokens
from greenlight.core.model import Action, Decision, Phase, RequestView, Via

KEY = b"r" * 32
FAST = RetryPolicy(max_retries=2, backoff_factor=0.01, read_timeout=0.4)


@dataclass
class Harness:
    teams: FakeTeams
    journal_dir: Path
    connectors: list[BotConnector]

    def notifier(self) -> TeamsNotifier:
        """A notifier as a fresh operator process builds it (same journal directory)."""
        teams = self.teams
        tokens = AppTokens(
            app_id=teams.app_id,
            credential=teams.app_password,
            authority=f"{teams.authority_url}/{TENANT_ID}",
            scope="https://api.botframework.com/.default",
            verify=str(teams.ca_file),
        )
        connector = BotConnector(
            tokens, ServiceUrls([teams.base_url + "/"]), FAST, ssl_context=teams.client_ssl()
        )
        self.connectors.append(connector)
        journal = CardJournal(self.journal_dir)
        journal.open()
        return TeamsNotifier(
            connector,
            CardTokens(KEY),
            journal,
            service_url=teams.service_url,
            default_conversation=CONVERSATION,
        )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with FakeTeams(tmp_path / "fake") as teams:
        harness = Harness(teams, tmp_path / "teams-cards", [])
        try:
            yield harness
        finally:
            for connector in harness.connectors:
                await connector.close()


def decided(request: RequestView, phase: Phase = Phase.APPROVED, reason: str = "") -> RequestView:
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    return replace(request, phase=phase, decision=Decision(phase, "alice", at, Via.TEAMS, reason))


async def test_a_card_is_posted_with_tokens_bound_to_the_request(harness: Harness) -> None:
    request = pending_request()
    ref = await harness.notifier().notify(request)

    card = harness.teams.cards[ref.ref]
    assert ref == NotificationRef(CONVERSATION, card.id)
    grant = CardTokens(KEY).verify(find_action(card.content, "approve")["data"]["token"])
    assert (grant.uid, grant.action, grant.plan_digest) == (
        request.uid,
        Action.APPROVE,
        request.plan_digest,
    )
    assert card.activity["summary"] == "Greenlight: payments/destroy-prod-7x2k is Pending"


async def test_the_request_conversation_overrides_the_default(harness: Harness) -> None:
    other = "19:other@thread.tacv2"
    ref = await harness.notifier().notify(pending_request(teams_conversation=other))
    assert harness.teams.cards[ref.ref].conversation == other


def test_channels_are_the_requests_own_or_the_default_and_the_policys(harness: Harness) -> None:
    notifier = harness.notifier()
    also = (("teams", "19:extra@thread.tacv2"), ("slack", "C0SLACK"))

    assert notifier.channels(pending_request(notify_also=also)) == (
        CONVERSATION,
        "19:extra@thread.tacv2",
    )


async def test_without_any_conversation_nothing_is_posted(harness: Harness) -> None:
    notifier = harness.notifier()
    notifier = TeamsNotifier(
        harness.connectors[-1],
        CardTokens(KEY),
        CardJournal(harness.journal_dir),
        service_url=harness.teams.service_url,
        default_conversation="",
    )
    with pytest.raises(NotifierError, match=r"spec\.notify\.teams\.conversation"):
        await notifier.notify(pending_request())


async def test_a_restart_after_the_post_returns_the_recorded_card(harness: Harness) -> None:
    """Killed after the Bot Connector answered, before the status write: no second card."""
    request = pending_request()
    first = await harness.notifier().notify(request)

    again = await harness.notifier().notify(request)

    assert again == first
    assert len(harness.teams.calls_to("send")) == 1


async def test_a_post_without_an_answer_is_not_repeated_and_a_click_adopts_it(
    harness: Harness,
) -> None:
    request = pending_request()
    harness.teams.respond_late("send", 0.8)

    with pytest.raises(NotifierError, match="no second card is posted"):
        await harness.notifier().notify(request)
    restarted = harness.notifier()
    with pytest.raises(NotifierError, match="the first click on it records it"):
        await restarted.notify(request)
    assert len(harness.teams.calls_to("send")) == 1
    (card,) = harness.teams.cards.values()

    assert CardJournal(harness.journal_dir).adopt(request.uid, CONVERSATION, card.id)
    assert await restarted.notify(request) == NotificationRef(CONVERSATION, card.id)
    assert len(harness.teams.calls_to("send")) == 1


async def test_a_post_the_connector_refused_is_posted_later(harness: Harness) -> None:
    """An outage leaves nothing posted; the announcer's retry then posts the card."""
    request = pending_request()
    harness.teams.outage = True
    with pytest.raises(NotifierError, match="http_503"):
        await harness.notifier().notify(request)

    harness.teams.outage = False
    ref = await harness.notifier().notify(request)

    assert ref.ref in harness.teams.cards
    assert len(harness.teams.cards) == 1


async def test_adopting_needs_a_post_without_an_answer(harness: Harness) -> None:
    request = pending_request()
    ref = await harness.notifier().notify(request)
    journal = CardJournal(harness.journal_dir)

    assert not journal.adopt(request.uid, CONVERSATION, "another-card")
    assert not journal.adopt("another-uid", CONVERSATION, ref.ref)
    record = journal.lookup(request.uid, CONVERSATION)
    assert record is not None
    assert (record.state, record.activity_id) == (State.POSTED, ref.ref)


async def test_an_unreadable_record_counts_as_an_unanswered_post(harness: Harness) -> None:
    request = pending_request()
    await harness.notifier().notify(request)
    (path,) = harness.journal_dir.glob("*.json")
    path.write_text("{torn")

    with pytest.raises(NotifierError, match="no second card"):
        await harness.notifier().notify(request)
    assert len(harness.teams.calls_to("send")) == 1


async def test_resolve_rewrites_the_card_and_replies_once(harness: Harness) -> None:
    request = pending_request()
    notifier = harness.notifier()
    ref = await notifier.notify(request)
    done = decided(request, Phase.DENIED, "change freeze")

    await notifier.resolve(done, ref)
    await notifier.resolve(done, ref)
    await harness.notifier().resolve(done, ref)

    card = harness.teams.cards[ref.ref]
    assert not has_actions(card.content)
    assert "change freeze" in text_of(card.content)
    assert len(harness.teams.calls_to("update")) == 3, "the card update is repeated, harmlessly"
    (reply,) = card.replies
    assert reply["textFormat"] == "plain"
    assert reply["text"].startswith("Denied: pulumi destroy on production")


async def test_a_reply_without_an_answer_is_not_sent_again(harness: Harness) -> None:
    request = pending_request()
    notifier = harness.notifier()
    ref = await notifier.notify(request)
    harness.teams.respond_late("reply", 0.8)

    await notifier.resolve(decided(request), ref)
    await harness.notifier().resolve(decided(request), ref)

    assert len(harness.teams.calls_to("reply")) == 1


async def test_a_card_that_is_gone_is_left_alone(harness: Harness) -> None:
    request = pending_request()
    await harness.notifier().resolve(decided(request), NotificationRef(CONVERSATION, "404404"))
    assert [c.status for c in harness.teams.calls_to("update")] == [404]


async def test_a_failed_resolve_is_retried_by_the_caller(harness: Harness) -> None:
    request = pending_request()
    notifier = harness.notifier()
    ref = await notifier.notify(request)
    harness.teams.outage = True

    with pytest.raises(NotifierError, match="teams resolve failed"):
        await notifier.resolve(decided(request), ref)
    harness.teams.outage = False
    await notifier.resolve(decided(request), ref)
    assert len(harness.teams.cards[ref.ref].replies) == 1


async def test_follow_ups_are_posted_once_per_key(harness: Harness) -> None:
    request = pending_request()
    notifier = harness.notifier()
    ref = await notifier.notify(request)
    note = FollowUp(key="reminder-1", text="Still pending.", teams_tags=("tag-sre",))

    await notifier.remind(request, ref, note)
    await harness.notifier().remind(request, ref, note)
    await notifier.remind(request, ref, replace(note, key="escalation-1"))

    replies = harness.teams.cards[ref.ref].replies
    assert [r["text"] for r in replies] == [
        "<at>tag-sre</at> Still pending.",
        "<at>tag-sre</at> Still pending.",
    ]
    assert replies[0]["entities"][0]["mentioned"]["type"] == "tag"


def test_old_records_are_dropped_when_the_journal_opens(tmp_path: Path) -> None:
    now = [1_000_000.0]
    journal = CardJournal(tmp_path, clock=lambda: now[0], retention_seconds=100)
    journal.open()
    journal.posted("uid-1", CONVERSATION, "1")
    (path,) = tmp_path.glob("*.json")
    os.utime(path, (now[0] - 200, now[0] - 200))

    journal.open()

    assert journal.lookup("uid-1", CONVERSATION) is None


async def test_no_card_is_posted_for_a_finished_request(harness: Harness) -> None:
    with pytest.raises(NotifierError, match="no card is posted for a finished request"):
        await harness.notifier().notify(decided(pending_request()))
    assert harness.teams.calls_to("send") == []
