"""Block Kit rendering: the message people decide on, and the one that tells how it ended."""

import json
from datetime import UTC, datetime
from typing import Any

from tests.fakes.slack import pending_request

from greenlight.adapters.slack import blocks
from greenlight.core.model import Decision, Phase, Via
from greenlight.core.plans import PlanReading


def _actions(message: blocks.RenderedMessage) -> list[dict[str, Any]]:
    return [b for b in message.blocks if b["type"] == "actions"]


def _text(message: blocks.RenderedMessage) -> str:
    return json.dumps(message.blocks)


def _mrkdwn(node: Any) -> list[str]:
    """Every mrkdwn text in a block tree: the only place Slack turns <...> into mentions."""
    if isinstance(node, dict):
        own = [node["text"]] if node.get("type") == "mrkdwn" else []
        return own + [t for value in node.values() for t in _mrkdwn(value)]
    if isinstance(node, list):
        return [t for item in node for t in _mrkdwn(item)]
    return []


def test_pending_message_has_approve_with_confirm_and_deny_buttons() -> None:
    message = blocks.pending_message(pending_request(), "tok-approve", "tok-deny")
    (actions,) = _actions(message)
    approve, deny = actions["elements"]
    assert (approve["action_id"], approve["value"], approve["style"]) == (
        blocks.APPROVE_ACTION_ID,
        "tok-approve",
        "primary",
    )
    assert approve["confirm"]["confirm"]["text"] == "Approve"
    assert (deny["action_id"], deny["value"], deny["style"]) == (
        blocks.DENY_ACTION_ID,
        "tok-deny",
        "danger",
    )
    assert "confirm" not in deny


def test_pending_message_shows_the_facts_and_the_plan_digest() -> None:
    request = pending_request()
    text = _text(blocks.pending_message(request, "a", "d"))
    for fact in ("pulumi destroy", "production", "wf-1234 / task-9", "carol", request.plan_digest):
        assert fact in text
    assert "-12 resources, 0 to create" in text
    assert "<!date^" in text


def test_plan_preview_is_bounded_and_points_to_the_full_plan() -> None:
    details = "\n".join(f"line {i} " + "x" * 50 for i in range(500))
    message = blocks.pending_message(pending_request(plan_preview=details), "a", "d")
    section = next(b for b in message.blocks if "```" in b.get("text", {}).get("text", ""))
    body = section["text"]["text"]
    code = body.split("```")[1]
    assert len(code) <= blocks.PREVIEW_MAX_CHARS
    assert len(code.splitlines()) <= blocks.PREVIEW_MAX_LINES
    assert "line 19 " in code
    assert "line 20 " not in code
    assert "kubectl get apr destroy-prod-7x2k -n payments -o yaml" in body
    assert len(body) <= 3000


def test_short_plan_is_shown_whole_without_a_pointer() -> None:
    message = blocks.pending_message(pending_request(plan_preview="one\ntwo"), "a", "d")
    assert "```one\ntwo```" in _text(message).replace("\\n", "\n")
    assert "Preview only" not in _text(message)


def test_requester_text_cannot_mention_the_channel_or_close_the_code_block() -> None:
    request = pending_request(action="<!channel> deploy", plan_preview="```\n<@U123> & more")
    text = "\n".join(_mrkdwn(blocks.pending_message(request, "a", "d").blocks))
    assert "<!channel>" not in text
    assert "&lt;!channel&gt; deploy" in text
    assert "<@U123>" not in text
    assert "&lt;@U123&gt; &amp; more" in text
    assert text.count("```") == 2


def test_resolved_message_has_no_buttons_and_says_who_when_how_and_why() -> None:
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    request = pending_request(
        phase=Phase.DENIED, decision=Decision(Phase.DENIED, "bob", at, Via.KUBECTL, "not today")
    )
    message = blocks.resolved_message(request)
    assert _actions(message) == []
    outcome = blocks.outcome_line(request)
    assert "*Denied* by *bob* via kubectl" in outcome
    assert "2026-05-01T12:00:00Z" in outcome
    assert ">not today" in outcome
    assert message.text.startswith("Denied: pulumi destroy")


def test_expiry_is_not_reported_as_somebodys_decision() -> None:
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    request = pending_request(
        phase=Phase.EXPIRED, decision=Decision(Phase.EXPIRED, "greenlight", at, Via.EXPIRY)
    )
    assert " by " not in blocks.outcome_line(request)
    assert "via expiry" in blocks.outcome_line(request)


def test_deny_modal_requires_a_reason_and_carries_its_context() -> None:
    context = blocks.DenyModalContext(token="tok", channel="C1", message_ts="1.2")
    view = blocks.deny_modal(pending_request(), context)
    reason = next(b for b in view["blocks"] if b["type"] == "input")
    assert reason["optional"] is False
    assert reason["element"]["min_length"] == 1
    assert (reason["block_id"], reason["element"]["action_id"]) == ("reason", "reason")
    assert blocks.DenyModalContext.decode(view["private_metadata"]) == context
    assert view["callback_id"] == blocks.DENY_VIEW_CALLBACK_ID


def _reading(**fields: Any) -> PlanReading:
    values: dict[str, Any] = {
        "format": "terraform-plan-json",
        "creates": 3,
        "updates": 1,
        "deletes": 1,
        "replaces": 1,
        "destroyed": ("aws_db_instance.main", "aws_instance.web[0]"),
        "resource_types": ("aws_db_instance", "aws_instance", "aws_s3_bucket"),
    }
    return PlanReading(**(values | fields))


def test_greenlights_counts_and_what_is_destroyed_come_before_the_requesters_summary() -> None:
    message = blocks.pending_message(pending_request(plan_reading=_reading()), "a", "d")
    texts = [b["text"]["text"] for b in message.blocks if b["type"] == "section" and "text" in b]

    (counts,) = [t for t in texts if "Greenlight's reading of the plan" in t]
    (summary,) = [t for t in texts if "-12 resources, 0 to create" in t]
    assert texts.index(counts) < texts.index(summary)
    assert ":warning: 1 to delete, 1 to replace, 3 to create, 1 to update" in counts
    assert "```aws_db_instance.main\naws_instance.web[0]```" in counts
    assert "*Summary, in the requester's words*" in summary
    assert message.text.endswith(": 1 to delete, 1 to replace, 3 to create, 1 to update")


def test_a_long_destroyed_list_fits_one_section_and_the_rest_is_counted() -> None:
    names = tuple(f"module.m{n}.aws_s3_bucket." + "x" * 220 for n in range(50))
    reading = _reading(deletes=900, replaces=100, destroyed=names, truncated=True)

    message = blocks.pending_message(pending_request(plan_reading=reading), "a", "d")
    (counts,) = [t for t in _mrkdwn(message.blocks) if "Greenlight's reading of the plan" in t]

    assert len(counts) <= 3000
    listed = counts.split("```")[1].splitlines()
    assert listed[0] == names[0]
    assert listed[-1] == f"… and {1000 - (len(listed) - 1)} more"


def test_destroyed_names_cannot_mention_the_channel_or_close_the_code_block() -> None:
    reading = _reading(destroyed=("<!channel>```*bold*",), deletes=1, replaces=0)

    message = blocks.pending_message(pending_request(plan_reading=reading), "a", "d")
    (counts,) = [t for t in _mrkdwn(message.blocks) if "Greenlight's reading of the plan" in t]

    assert "<!channel>" not in counts
    assert counts.count("```") == 2


def test_a_plan_without_changes_says_so_without_a_warning() -> None:
    reading = PlanReading(format="pulumi-preview-json")

    message = blocks.pending_message(pending_request(plan_reading=reading), "a", "d")

    assert "*Greenlight's reading of the plan* (pulumi-preview-json)\nno changes" in (
        _mrkdwn(message.blocks)
    )
