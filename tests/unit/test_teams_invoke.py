"""The messaging endpoint (teams/invoke.py, actions.py) as `start_teams` serves it, with Teams
played by the fake and the decision path stubbed (`StubDecisions`: its contract only).

Every click is a real HTTP POST of a signed activity; the verifier fetches the fake's real
OpenID metadata and JWKS over HTTPS. The real decision path (SubjectAccessReview, policy,
audit) is exercised end to end in tests/e2e/test_teams.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from tests.fakes.slack import StubDecisions, pending_request
from tests.fakes.teams import (
    CONVERSATION,
    OTHER_TENANT_ID,
    TENANT_ID,
    Card,
    FakeTeams,
    Forgery,
    Member,
    find_action,
    has_actions,
    text_of,
)

from greenlight.adapters.chat import DecisionsPort
from greenlight.adapters.teams import RetryPolicy, TeamsRuntime, start_teams
from greenlight.adapters.teams.invoke import MAX_BODY_BYTES, ActivityIds
from greenlight.adapters.teams.journal import CardJournal
from greenlight.config import Settings
from greenlight.core.model import Action, Identity, Phase, RequestView, Via
from greenlight.telemetry import metrics

ALICE = "0b6a3c1e-8f39-4c5e-9d8a-2f1f7c9e5a10"  # in the mapping file
BOB = "6f2d9b7a-1c3e-4b5a-8e9f-0a1b2c3d4e5f"  # found by the members API
EVE = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"  # a member without the RBAC verb
GUEST = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
KEY = b"m" * 32
GENUINE = Forgery()


@dataclass
class Harness:
    teams: FakeTeams
    decisions: StubDecisions
    runtime: TeamsRuntime
    members: dict[str, Member]
    workdir: Path

    async def post(self, request: RequestView | None = None) -> tuple[RequestView, Card]:
        request = self.decisions.add(request or pending_request())
        ref = await self.runtime.notifier.notify(request)
        return request, self.teams.cards[ref.ref]

    async def click(
        self,
        who: str,
        card: Card,
        verb: str = "approve",
        *,
        forgery: Forgery = GENUINE,
        **options: Any,
    ) -> tuple[int, Any]:
        activity = self.teams.activity(self.members[who], card, verb, **options)
        token = self.teams.sign(activity, forgery)
        if forgery.activity_service_url == OTHER_PATH:
            activity["serviceUrl"] = f"{self.teams.base_url}/other/"
        return await self.teams.deliver(self.runtime.messages_url, activity, token)

    async def audited(self, reason: str) -> dict[str, Any]:
        await self.decisions.wait_audited(reason)
        return next(a for a in self.decisions.audits if a["reason"] == reason)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with FakeTeams(tmp_path / "fake") as teams:
        members = {
            "alice": teams.add_member(ALICE, "alice.other@example.com"),
            "bob": teams.add_member(BOB, "bob@example.com"),
            "eve": teams.add_member(EVE, "eve@example.com"),
            "guest": teams.add_member(GUEST, "guest@partner.example", role="guest"),
            "foreigner": teams.add_member(
                "7e6d5c4b-3a2f-4e1d-9c8b-7a6f5e4d3c2b", "carl@other.example", tenant=OTHER_TENANT_ID
            ),
            "stranger": Member("3c2b1a0f-9e8d-4c7b-a6f5-e4d3c2b1a0f9", "stranger@example.com"),
        }
        user_map = tmp_path / "teams-users.yaml"
        user_map.write_text(yaml.safe_dump({ALICE: "alice@example.com"}))
        decisions = StubDecisions(allowed={"alice@example.com", "bob@example.com"})
        settings = Settings(
            teams_app_id=teams.app_id,
            teams_app_password=SecretStr(teams.app_password),
            teams_tenant_id=TENANT_ID,
            teams_openid_metadata_url=teams.metadata_url,
            teams_authority_url=teams.authority_url,
            teams_service_url=teams.service_url,
            teams_service_urls=(teams.base_url + "/",),
            teams_default_conversation=CONVERSATION,
            teams_user_map_file=user_map,
            teams_port=0,
            teams_host="127.0.0.1",
            audit_file=tmp_path / "audit" / "audit.jsonl",
        )

        async def submit(
            namespace: str,
            name: str,
            identity: Identity,
            action: Action,
            reason: str,
            via: Via,
            *,
            uid: str = "",
        ) -> RequestView:  # looked up per call, so a test may slow the stub down
            return await decisions.submit_decision(
                namespace, name, identity, action, reason, via, uid=uid
            )

        port = DecisionsPort(submit, decisions.find_request_by_uid, decisions.record_audit)
        runtime = await start_teams(
            settings,
            port,
            card_key=KEY,
            retry=RetryPolicy(max_retries=1, backoff_factor=0.01),
            min_key_refetch_seconds=0.5,
            invoke_budget=1.0,
            trust=teams.ca_file,
        )
        try:
            yield Harness(teams, decisions, runtime, members, tmp_path)
        finally:
            await runtime.stop()


def refused_count(reason: str) -> float:
    value = metrics.OPERATOR_REGISTRY.get_sample_value(
        "greenlight_decision_attempts_refused_total", {"reason": reason}
    )
    return value or 0.0


# -- deciding -------------------------------------------------------------------------------


async def test_approve_click_decides_and_answers_with_the_resolved_card(harness: Harness) -> None:
    request, card = await harness.post()

    status, answer = await harness.click("alice", card)

    assert status == 200
    assert (answer["statusCode"], answer["type"]) == (
        200,
        "application/vnd.microsoft.card.adaptive",
    )
    assert not has_actions(answer["value"])
    assert "alice@example.com" in text_of(answer["value"])
    ((ns, name, identity, action, reason, via),) = harness.decisions.submitted
    assert (ns, name, action, reason, via) == (
        request.namespace,
        request.name,
        Action.APPROVE,
        "",
        Via.TEAMS,
    )
    assert identity == Identity("alice@example.com", ("system:authenticated",))


async def test_a_member_not_in_the_mapping_is_named_by_the_members_api(harness: Harness) -> None:
    _request, card = await harness.post(pending_request(required_approvals=2))

    status, answer = await harness.click("bob", card)

    assert status == 200
    assert answer["type"] == "application/vnd.microsoft.activity.message"
    assert answer["value"].startswith("Recorded: you approved payments/destroy-prod-7x2k")
    assert harness.decisions.submitted[0][2].user == "bob@example.com"


async def test_deny_with_a_reason_decides(harness: Harness) -> None:
    _request, card = await harness.post()

    status, answer = await harness.click("bob", card, "deny", reason="  change freeze  ")

    assert status == 200
    assert "change freeze" in text_of(answer["value"])
    assert harness.decisions.submitted[0][3:5] == (Action.DENY, "change freeze")


async def test_deny_without_a_reason_is_refused_by_the_decision_path(harness: Harness) -> None:
    request, card = await harness.post()

    _status, answer = await harness.click("bob", card, "deny", reason="   ")

    assert answer["value"] == "Refused: a deny needs a reason"
    assert harness.decisions.requests[request.uid].phase is Phase.PENDING


async def test_a_double_click_is_recorded_once(harness: Harness) -> None:
    _request, card = await harness.post(pending_request(required_approvals=2))

    await harness.click("bob", card)
    _status, answer = await harness.click("bob", card)

    assert answer["value"] == "Your approval of payments/destroy-prod-7x2k was already recorded."


async def test_a_click_on_a_decided_request_shows_who_decided_it(harness: Harness) -> None:
    request, card = await harness.post()
    await harness.click("alice", card)

    _status, answer = await harness.click("bob", card)

    assert answer["type"] == "application/vnd.microsoft.card.adaptive", "the stale card is updated"
    assert "Approved" in text_of(answer["value"])
    assert harness.decisions.requests[request.uid].decision is not None


async def test_a_refused_member_is_told_why(harness: Harness) -> None:
    _request, card = await harness.post()

    _status, answer = await harness.click("eve", card)

    assert answer["value"] == "Refused: eve@example.com may not approve this request"


# -- who may click --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "reason", "why"),
    [
        ("guest", "unknown_user", "is a guest"),
        ("stranger", "unknown_user", "does not list you"),
    ],
)
async def test_users_without_an_identity_are_refused_and_audited(
    harness: Harness, who: str, reason: str, why: str
) -> None:
    request, card = await harness.post()
    before = refused_count(reason)

    _status, answer = await harness.click(who, card)

    assert why in answer["value"]
    record = await harness.audited(reason)
    assert record["actor"] == f"teams:{harness.members[who].oid}"
    assert record["request"]["uid"] == request.uid
    assert record["details"]["via"] == "teams"
    assert refused_count(reason) == before + 1
    assert harness.decisions.submitted == []


async def test_a_user_of_another_tenant_is_refused_and_audited(harness: Harness) -> None:
    _request, card = await harness.post()
    before = refused_count("foreign_tenant")

    status, answer = await harness.click("foreigner", card)

    assert status == 200
    assert answer["value"].startswith("Refused: only people of the organization")
    record = await harness.audited("foreign_tenant")
    assert record["actor"] == f"teams:{harness.members['foreigner'].oid}"
    assert refused_count("foreign_tenant") == before + 1
    assert harness.teams.calls_to("member") == [], "nobody is looked up for another tenant"
    assert harness.decisions.submitted == []


async def test_a_member_of_another_tenant_in_an_allowed_tenants_channel_is_refused(
    harness: Harness,
) -> None:
    """A shared channel: the activity names Greenlight's tenant, the member record another."""
    _request, card = await harness.post()

    _status, answer = await harness.click("foreigner", card, tenant=TENANT_ID)

    assert "another organization" in answer["value"]
    await harness.audited("foreign_tenant")


async def test_an_activity_naming_two_tenants_is_refused(harness: Harness) -> None:
    _request, card = await harness.post()
    activity = harness.teams.activity(harness.members["alice"], card, "approve")
    activity["channelData"]["tenant"]["id"] = OTHER_TENANT_ID

    _status, answer = await harness.teams.deliver(
        harness.runtime.messages_url, activity, harness.teams.sign(activity)
    )

    assert answer["value"].startswith("Refused")
    assert harness.decisions.submitted == []


# -- forged tokens and activities -----------------------------------------------------------

OTHER_PATH = "other-path"  # the activity's serviceUrl: allowed, but not the token's

FORGERIES = {
    "wrong-key": (Forgery(key="unknown"), "invalid_signature", "not the Bot Framework's"),
    "wrong-kid": (Forgery(kid="kid-nobody-published"), "invalid_signature", "not the Bot Fra"),
    "wrong-aud": (Forgery(aud="another-bot"), "invalid_signature", "another audience"),
    "wrong-iss": (Forgery(iss="https://sts.windows.net/x/"), "invalid_signature", "another issuer"),
    "expired": (Forgery(exp_offset=-400), "stale_timestamp", "expired"),
    "not-yet-valid": (Forgery(nbf_offset=400), "stale_timestamp", "not valid yet"),
    "alg-none": (Forgery(alg="none"), "invalid_signature", "'none' is not RS256"),
    "hs256-app-password": (Forgery(alg="HS256"), "invalid_signature", "'HS256' is not RS256"),
    "missing-endorsement": (Forgery(key="unendorsed"), "invalid_signature", "endorsed"),
    "serviceurl-not-allowed": (
        Forgery(serviceurl="https://evil.example/teams/"),
        "invalid_signature",
        "serviceurl is not an allowed one",
    ),
    "serviceurl-mismatch": (
        Forgery(activity_service_url=OTHER_PATH),
        "invalid_signature",
        "serviceUrl is not the token's serviceurl",
    ),
}


@pytest.mark.parametrize("forgery", list(FORGERIES), ids=list(FORGERIES))
async def test_forged_tokens_are_refused_audited_and_never_decide(
    harness: Harness, forgery: str
) -> None:
    forged, reason, check = FORGERIES[forgery]
    _request, card = await harness.post()
    before = refused_count(reason)

    status, answer = await harness.click("alice", card, forgery=forged)

    assert (status, answer) == (401, f"refused: {reason}")
    record = await harness.audited(reason)
    assert (record["actor"], record["outcome"]) == ("teams:unverified", "refused")
    assert check in record["details"]["check"]
    assert record["details"]["via"] == "teams"
    assert refused_count(reason) == before + 1
    assert harness.decisions.submitted == []
    assert harness.teams.calls_to("member") == []


async def test_no_token_is_refused_before_the_body_is_read(harness: Harness) -> None:
    huge = {"type": "invoke", "padding": "x" * (MAX_BODY_BYTES * 2)}
    status, answer = await harness.teams.deliver(harness.runtime.messages_url, huge, None)
    assert (status, answer) == (401, "refused: invalid_signature")


async def test_an_oversized_activity_with_a_genuine_token_is_refused(harness: Harness) -> None:
    _request, card = await harness.post()
    activity = harness.teams.activity(harness.members["alice"], card, "approve")
    activity["padding"] = "x" * MAX_BODY_BYTES
    status, _answer = await harness.teams.deliver(
        harness.runtime.messages_url, activity, harness.teams.sign(activity)
    )
    assert status == 413


async def test_a_body_that_is_no_activity_is_refused(harness: Harness) -> None:
    _request, card = await harness.post()
    activity = harness.teams.activity(harness.members["alice"], card, "approve")
    token = harness.teams.sign(activity)
    for broken in ([1, 2], {"type": 7}, {"id": "x"}):
        status, _ = await harness.teams.deliver(harness.runtime.messages_url, broken, token)  # type: ignore[arg-type]
        assert status in {400, 401}
    assert harness.decisions.submitted == []


@pytest.mark.parametrize("channel", ["webchat", "directline"])
async def test_activities_of_other_channels_are_refused(harness: Harness, channel: str) -> None:
    _request, card = await harness.post()
    activity = harness.teams.activity(harness.members["alice"], card, "approve")
    activity["channelId"] = channel

    status, _ = await harness.teams.deliver(
        harness.runtime.messages_url, activity, harness.teams.sign(activity)
    )

    assert status == 401
    assert harness.decisions.submitted == []


async def test_a_replayed_activity_is_refused_and_decides_once(harness: Harness) -> None:
    _request, card = await harness.post(pending_request(required_approvals=2))
    activity = harness.teams.activity(harness.members["alice"], card, "approve")
    token = harness.teams.sign(activity)
    before = refused_count("replayed")

    first, _ = await harness.teams.deliver(harness.runtime.messages_url, activity, token)
    again, answer = await harness.teams.deliver(harness.runtime.messages_url, activity, token)
    fresh_token, _ = await harness.teams.deliver(
        harness.runtime.messages_url, activity, harness.teams.sign(activity)
    )

    assert (first, again, fresh_token) == (200, 401, 401)
    assert answer == "refused: replayed"
    assert len(harness.decisions.submitted) == 1
    await harness.audited("replayed")
    assert refused_count("replayed") == before + 2


async def test_only_clicks_that_are_acted_on_are_remembered_as_seen(harness: Harness) -> None:
    _request, card = await harness.post()
    chat = harness.teams.activity(harness.members["bob"], card, "approve")
    chat.update(type="message", text="hello", value=None)
    foreign = harness.teams.activity(harness.members["foreigner"], card, "approve")
    for activity in (chat, foreign):
        for _ in range(2):  # the same id again: neither was remembered, so neither is a replay
            status, answer = await harness.teams.deliver(
                harness.runtime.messages_url, activity, harness.teams.sign(activity)
            )
            assert status == 200, answer
            assert answer != "refused: replayed"
    assert harness.decisions.submitted == []


def test_activity_ids_are_remembered_until_their_token_expires_in_bounded_memory() -> None:
    now = [1000.0]
    ids = ActivityIds(capacity=3, clock=lambda: now[0])

    assert ids.first_time("a", until=1010) is True
    assert ids.first_time("a", until=1010) is False
    assert ids.first_time("b", until=2000) is True
    assert ids.first_time("c", until=2000) is True
    assert ids.first_time("d", until=2000) is None, "full of live ids: turned away, not forgotten"
    now[0] = 1400.0  # "a" expired (its token and the 5 minutes of skew)
    assert ids.first_time("d", until=2000) is True
    assert ids.first_time("b", until=2000) is False


# -- card tokens ----------------------------------------------------------------------------


async def test_a_tampered_card_token_is_refused_and_audited(harness: Harness) -> None:
    _request, card = await harness.post()
    token = find_action(card.content, "approve")["data"]["token"]
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

    _status, answer = await harness.click(
        "alice", card, data={"greenlight": "1", "token": tampered}
    )

    assert answer["value"] == "Refused: This card was not issued by Greenlight."
    assert (await harness.audited("invalid_token"))["actor"] == f"teams:{ALICE}"
    assert harness.decisions.submitted == []


async def test_the_deny_token_cannot_approve(harness: Harness) -> None:
    _request, card = await harness.post()
    deny = find_action(card.content, "deny")["data"]

    _status, answer = await harness.click("alice", card, "approve", data=deny)

    assert answer["value"] == "Refused: This card was not issued by Greenlight."
    assert harness.decisions.submitted == []


async def test_a_card_for_another_plan_is_refused(harness: Harness) -> None:
    request, card = await harness.post()
    harness.decisions.requests[request.uid] = replace(request, plan_digest="sha256:" + "cd" * 32)

    _status, answer = await harness.click("alice", card)

    assert "another plan" in answer["value"]
    assert harness.decisions.submitted == []


# -- the fallback, keys, and the rest -------------------------------------------------------


async def test_the_action_submit_fallback_decides_and_replies_in_the_thread(
    harness: Harness,
) -> None:
    _request, card = await harness.post()

    status, _answer = await harness.click("bob", card, "deny", reason="not today", fallback=True)

    assert status == 200
    for _ in range(100):
        if card.replies:
            break
        await asyncio.sleep(0.05)
    (reply,) = card.replies
    assert reply["text"] == "Recorded: Denied."
    assert harness.decisions.submitted[0][3:5] == (Action.DENY, "not today")


async def test_a_rotated_signing_key_is_found_and_random_kids_fetch_at_most_once(
    harness: Harness,
) -> None:
    _request, card = await harness.post(pending_request(required_approvals=3))
    await harness.click("alice", card)
    fetched = harness.teams.jwks_fetches
    await asyncio.sleep(0.6)
    harness.teams.rotate_key()

    status, _ = await harness.click("bob", card)
    assert status == 200
    assert harness.teams.jwks_fetches == fetched + 1

    for n in range(20):
        status, _ = await harness.click("bob", card, forgery=Forgery(key="unknown", kid=f"r{n}"))
        assert status == 401
    assert harness.teams.jwks_fetches <= fetched + 2


async def test_a_click_adopts_a_card_whose_post_had_no_answer(harness: Harness) -> None:
    request, card = await harness.post()
    journal = CardJournal(harness.workdir / "audit" / "teams-cards")
    journal.begin(request.uid, CONVERSATION)  # as if the answer to the post never came

    await harness.click("alice", card)

    record = journal.lookup(request.uid, CONVERSATION)
    assert record is not None
    assert record.activity_id == card.id


async def test_other_invokes_and_activities_are_acknowledged_and_ignored(harness: Harness) -> None:
    _request, card = await harness.post()
    update = harness.teams.activity(harness.members["alice"], card, "approve")
    update.update(type="conversationUpdate", value=None, membersAdded=[{"id": "28:bot"}])
    other = harness.teams.activity(harness.members["alice"], card, "approve")
    other["name"] = "composeExtension/query"
    chat = harness.teams.activity(harness.members["alice"], card, "approve", fallback=True)
    chat["value"] = None
    chat["text"] = "hello bot"

    for activity, expected in ((update, 200), (other, 501), (chat, 200)):
        status, _ = await harness.teams.deliver(
            harness.runtime.messages_url, activity, harness.teams.sign(activity)
        )
        assert status == expected
    assert harness.decisions.submitted == []


async def test_a_slow_decision_is_answered_in_time_and_finished(harness: Harness) -> None:
    _request, card = await harness.post()
    slow = harness.decisions.submit_decision

    async def submit(*args: Any, **kwargs: Any) -> RequestView:
        await asyncio.sleep(1.5)
        return await slow(*args, **kwargs)

    harness.decisions.submit_decision = submit  # type: ignore[method-assign]
    status, answer = await harness.click("alice", card)

    assert status == 200
    assert answer["value"].startswith("Greenlight is still recording your decision")
    for _ in range(40):
        if harness.decisions.submitted:
            break
        await asyncio.sleep(0.1)
    assert harness.decisions.submitted, "the decision is finished after the answer"


async def test_an_action_without_greenlights_data_is_refused_and_audited(harness: Harness) -> None:
    _request, card = await harness.post()

    _status, answer = await harness.click("alice", card, data={"something": "else"})

    assert answer["value"] == "Refused: This action was not issued by Greenlight."
    assert (await harness.audited("invalid_token"))["actor"] == f"teams:{ALICE}"
    assert harness.decisions.submitted == []
