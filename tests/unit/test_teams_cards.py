"""Adaptive Cards (teams/cards.py): what people see, and what requesters cannot fake on it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.fakes.slack import pending_request
from tests.fakes.teams import find_action, runs_of, text_of

from greenlight.adapters.teams import cards
from greenlight.core.model import Decision, Phase, RequestView, Via
from greenlight.core.plans import PlanReading

AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def pending(**changes: Any) -> RequestView:
    return pending_request(**changes)


def blocks_of(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Every element of the card, nested ones included."""
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            found.append(value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(card)
    return found


def text_blocks(card: dict[str, Any]) -> list[str]:
    return [str(b["text"]) for b in blocks_of(card) if b.get("type") == "TextBlock"]


def test_pending_card_is_schema_1_5_with_approve_and_deny_universal_actions() -> None:
    card = cards.pending_card(pending(), "gt1.approve", "gt1.deny")

    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.5")
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    approve, deny = find_action(card, "approve"), find_action(card, "deny")
    assert approve["data"] == {"greenlight": "1", "token": "gt1.approve"}
    assert deny["data"] == {"greenlight": "1", "token": "gt1.deny"}
    assert approve["associatedInputs"] == "none", "approving asks for no reason"
    assert deny["associatedInputs"] == "auto"


def test_every_action_falls_back_to_action_submit_with_the_same_data() -> None:
    card = cards.pending_card(pending(), "gt1.approve", "gt1.deny")
    for verb, token in (("approve", "gt1.approve"), ("deny", "gt1.deny")):
        fallback = find_action(card, verb)["fallback"]
        assert fallback["type"] == "Action.Submit"
        assert fallback["data"] == {"greenlight": "1", "token": token, "verb": verb}


def test_deny_form_requires_a_reason() -> None:
    card = cards.pending_card(pending(), "a", "d")
    (reason,) = [b for b in blocks_of(card) if b.get("type") == "Input.Text"]
    assert reason["id"] == "reason"
    assert reason["isRequired"] is True
    assert reason["maxLength"] == cards.REASON_MAX


def test_facts_digest_and_expiry_are_on_the_card() -> None:
    request = pending(expires_at=AT, on_behalf_of="carol")
    card = cards.pending_card(request, "a", "d")
    runs = runs_of(card)

    for fact in ("pulumi destroy", "production", "wf-1234 / task-9", "payments/destroy-prod-7x2k"):
        assert fact in runs
    assert "system:serviceaccount:ci:runner on behalf of carol" in runs
    assert request.plan_digest in runs
    assert any("{{DATE(2025-03-04T05:06:07Z, SHORT)}}" in t for t in text_blocks(card))


def test_requester_words_are_shown_only_as_literal_text_runs() -> None:
    """Markdown, links and mentions written by the requester reach no TextBlock (which Teams
    renders as markdown): they are TextRuns, shown as written."""
    sneaky = "**APPROVED** by [security](https://evil.example) <at>everyone</at>"
    request = pending(
        action=sneaky, target=sneaky, plan_summary=sneaky, plan_preview=sneaky, workflow_id=sneaky
    )
    for card in (cards.pending_card(request, "a", "d"), cards.resolved_card(request)):
        assert not [t for t in text_blocks(card) if "evil.example" in t or "**APPROVED**" in t]
        assert sum(sneaky in run for run in runs_of(card)) >= 4


def test_greenlights_plan_reading_and_the_requesters_summary_are_told_apart() -> None:
    reading = PlanReading(
        format="pulumi-preview-json",
        creates=1,
        updates=2,
        deletes=12,
        replaces=3,
        destroyed=tuple(f"urn:pulumi:prod::app::aws:s3/bucket:Bucket::logs-{i}" for i in range(30)),
        truncated=True,
    )
    card = cards.pending_card(pending(plan_reading=reading), "a", "d")
    texts, runs = text_blocks(card), runs_of(card)

    assert "1 to create, 2 to update, 12 to delete, 3 to replace" in texts
    assert "Greenlight's reading of the plan (pulumi-preview-json)" in texts
    assert "Summary, in the requester's words" in texts
    assert "-12 resources, 0 to create" in runs
    destroyed = [r for r in runs if "aws:s3/bucket" in r]
    assert len(destroyed) == cards.DESTROYED_MAX
    assert "… and more (see status.plan)" in runs


def test_without_a_plan_reading_the_summary_is_labelled_as_the_requesters() -> None:
    texts = text_blocks(cards.pending_card(pending(plan_reading=None), "a", "d"))
    assert "Summary, in the requester's words" in texts
    assert not [t for t in texts if t.startswith("Greenlight's reading")]


def test_plan_preview_is_bounded_and_points_at_the_full_plan() -> None:
    preview = "\n".join(f"- aws:s3:Bucket logs-{i:02d} delete" for i in range(40))
    card = cards.pending_card(pending(plan_preview=preview), "a", "d")
    runs = runs_of(card)
    (shown,) = [r for r in runs if "logs-00" in r]

    assert "logs-19" in shown
    assert "logs-20" not in shown
    assert "kubectl get apr destroy-prod-7x2k -n payments -o yaml" in runs


def test_the_largest_card_stays_under_the_teams_message_limit() -> None:
    worst = "\x01" * 5000  # JSON escapes each of these as six bytes
    reading = PlanReading(
        format="terraform-plan-json", destroyed=tuple("\x02" * 300 for _ in range(50))
    )
    request = pending(
        action=worst[:253],
        target=worst[:253],
        plan_summary=worst[:1024],
        plan_preview=worst,
        plan_reading=reading,
    )
    for card in (cards.pending_card(request, "gt1." + "A" * 200, "gt1." + "B" * 200),):
        assert len(json.dumps(card).encode()) <= cards.MAX_CARD_BYTES
        assert "kubectl get apr destroy-prod-7x2k -n payments -o yaml" in runs_of(card)
    decided = replace(
        request,
        phase=Phase.DENIED,
        decision=Decision(Phase.DENIED, "bob", AT, Via.TEAMS, worst[: cards.REASON_MAX]),
    )
    assert len(json.dumps(cards.resolved_card(decided)).encode()) <= cards.MAX_CARD_BYTES


def test_resolved_card_has_no_actions_and_says_who_when_how_and_why() -> None:
    decided = replace(
        pending(),
        phase=Phase.DENIED,
        decision=Decision(Phase.DENIED, "bob@example.com", AT, Via.TEAMS, "change freeze"),
    )
    card = cards.resolved_card(decided)

    assert "actions" not in card
    text = text_of(card)
    for part in ("Denied", "bob@example.com", "via teams", "change freeze", "2025-03-04T05:06:07Z"):
        assert part in text


def test_an_expiry_names_nobody() -> None:
    expired = replace(
        pending(),
        phase=Phase.EXPIRED,
        decision=Decision(Phase.EXPIRED, "greenlight", AT, Via.EXPIRY),
    )
    card = cards.resolved_card(expired)
    assert "By " not in runs_of(card)
    assert "greenlight" not in cards.outcome_text(expired).split(" via ")[0]


def test_outcome_reply_is_plain_text() -> None:
    decided = replace(
        pending(),
        phase=Phase.APPROVED,
        decision=Decision(Phase.APPROVED, "alice", AT, Via.KUBECTL),
    )
    reply = cards.text_message(cards.outcome_text(decided))

    assert reply["textFormat"] == "plain"
    assert reply["text"] == (
        "Approved: pulumi destroy on production (payments/destroy-prod-7x2k) by alice via "
        "kubectl at 2025-03-04T05:06:07Z"
    )


@pytest.mark.parametrize(
    ("builder", "kind"),
    [
        (
            lambda: cards.invoke_card({"type": "AdaptiveCard"}),
            "application/vnd.microsoft.card.adaptive",
        ),
        (lambda: cards.invoke_message("hi"), "application/vnd.microsoft.activity.message"),
    ],
)
def test_invoke_responses_are_adaptive_card_invoke_responses(builder: Any, kind: str) -> None:
    response = builder()
    assert (response["statusCode"], response["type"]) == (200, kind)


def test_follow_ups_mention_teams_tags_by_id() -> None:
    message = cards.follow_up("Still waiting for an approver.", ("tag-123",))
    assert message["text"] == "<at>tag-123</at> Still waiting for an approver."
    assert message["entities"][0]["mentioned"] == {
        "id": "tag-123",
        "name": "tag-123",
        "type": "tag",
    }
