"""Adaptive Cards (schema 1.5): what people see in Teams, as plain functions over a RequestView.

Everything a requester wrote (action, target, workflow ids, the plan summary and preview) is
untrusted text. It is shown only in `TextRun`s of a `RichTextBlock`, which Teams renders
literally (no markdown: no fake links, no emphasis, no mentions), and cut to bounds; Greenlight's
own words use `TextBlock`s. The card shows Greenlight's own reading of the plan when it has one
(`plan_reading`: counts and what is destroyed) and the requester's summary labelled as the
requester's words, a bounded preview, the `planDigest` people can check against what will run,
and the expiry.

Actions are Universal Actions (`Action.Execute`, verbs `approve` and `deny`) carrying an opaque
card token (tokens.py); Deny opens an inline form whose reason is required (and re-checked by
the decision path). Each action's `fallback` is an `Action.Submit` with the same data, which
Teams clients without Universal Actions send as a message activity (invoke.py takes both).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from greenlight.core.model import Phase, RequestView
from greenlight.core.timefmt import format_time

Element = dict[str, Any]

CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
VERSION = "1.5"
APPROVE_VERB = "approve"
DENY_VERB = "deny"
REASON_INPUT_ID = "reason"
DATA_MARK = "greenlight"  # `data.greenlight` names Greenlight's card data, version 1
DATA_VERSION = "1"

PREVIEW_MAX_LINES = 20
PREVIEW_MAX_CHARS = 2500
REASON_MAX = 3000
DESTROYED_MAX = 20
# Teams refuses messages over about 28 KB; a card that would be larger loses its preview.
MAX_CARD_BYTES = 24 * 1024
_TEXT_MAX = 500
_SUMMARY_MAX = 1000
_ITEM_MAX = 200
_BRIEF_MAX = 300
# How much of the plan and the words a card shows (_fitted picks the most that fits).
_FULL, _NO_PREVIEW, _BRIEF = 2, 1, 0

_OUTCOME_COLOR = {
    Phase.APPROVED: "good",
    Phase.DENIED: "attention",
    Phase.EXPIRED: "warning",
    Phase.CANCELLED: "default",
    Phase.PENDING: "accent",
}


def pending_card(request: RequestView, approve_token: str, deny_token: str) -> Element:
    """The announcement: facts, plan, digest, expiry, and the Approve / Deny actions."""
    actions = [
        _execute(APPROVE_VERB, "Approve", "positive", approve_token, inputs="none"),
        {
            "type": "Action.ShowCard",
            "title": "Deny…",
            "card": {
                "type": "AdaptiveCard",
                "body": [
                    {
                        "type": "Input.Text",
                        "id": REASON_INPUT_ID,
                        "label": "Why deny it? (required)",
                        "isMultiline": True,
                        "isRequired": True,
                        "maxLength": REASON_MAX,
                        "errorMessage": "A deny needs a reason.",
                    }
                ],
                "actions": [_execute(DENY_VERB, "Deny", "destructive", deny_token, inputs="auto")],
            },
        },
    ]
    title = f"Approval needed: {request.action}"
    return _fitted(lambda detail: _card(request, title, actions=actions, detail=detail))


def resolved_card(request: RequestView) -> Element:
    """The same facts with the actions replaced by the outcome: who, when, via which path, why."""
    title = f"{request.phase.value}: {request.action}"
    return _fitted(lambda detail: _card(request, title, outcome=True, detail=detail))


def outcome_text(request: RequestView) -> str:
    """One plain-text paragraph that says how the request ended (the thread reply)."""
    decision = request.decision
    line = f"{request.phase.value}: {_cut(request.action, _TEXT_MAX)} on "
    line += f"{_cut(request.target, _TEXT_MAX)} ({_ref(request)})"
    if decision is None:
        return line
    if request.phase is not Phase.EXPIRED:
        line += f" by {decision.by}"
    line += f" via {decision.via.value} at {format_time(decision.at)}"
    if decision.reason:
        line += f". Reason: {_cut(decision.reason, REASON_MAX)}"
    return line


def message(card: Element, summary: str) -> dict[str, Any]:
    """The message activity that carries `card` (for send and update)."""
    return {
        "type": "message",
        "summary": _cut(summary, 200),
        "attachments": [{"contentType": CONTENT_TYPE, "content": card}],
    }


def text_message(text: str) -> dict[str, Any]:
    """A plain-text message activity (Teams renders `plain` without markdown or mentions)."""
    return {"type": "message", "textFormat": "plain", "text": _cut(text, 4000)}


def follow_up(text: str, tags: tuple[str, ...]) -> dict[str, Any]:
    """A reminder or escalation (a policy's own words) mentioning Teams tags by id."""
    mentions = [
        {
            "type": "mention",
            "text": f"<at>{tag}</at>",
            "mentioned": {"id": tag, "name": tag, "type": "tag"},
        }
        for tag in tags
    ]
    prefix = " ".join(f"<at>{tag}</at>" for tag in tags)
    return {
        "type": "message",
        "text": _cut(f"{prefix} {text}" if prefix else text, 4000),
        "entities": mentions,
    }


def invoke_card(card: Element) -> dict[str, Any]:
    """The AdaptiveCardInvokeResponse that replaces the clicked card with `card`."""
    return {"statusCode": 200, "type": CONTENT_TYPE, "value": card}


def invoke_message(text: str) -> dict[str, Any]:
    """The AdaptiveCardInvokeResponse that shows `text` to the person who clicked, only."""
    return {
        "statusCode": 200,
        "type": "application/vnd.microsoft.activity.message",
        "value": _cut(text, 1000),
    }


def plan_preview(details: str) -> tuple[str, bool]:
    """The first PREVIEW_MAX_LINES lines / PREVIEW_MAX_CHARS characters; True when cut."""
    lines = details.splitlines()
    preview = "\n".join(lines[:PREVIEW_MAX_LINES])
    truncated = len(lines) > PREVIEW_MAX_LINES or details.endswith("\n…")
    if len(preview) > PREVIEW_MAX_CHARS:
        preview, truncated = preview[:PREVIEW_MAX_CHARS], True
    return preview, truncated


def _card(
    request: RequestView,
    title: str,
    *,
    actions: list[Element] | None = None,
    outcome: bool = False,
    detail: int = _FULL,
) -> Element:
    body: list[Element] = [
        _rich([_run(title, weight="Bolder", size="Large")]),
        *_facts(request),
        *_plan(request, detail),
        _rich([_run("Plan digest ", subtle=True), _run(request.plan_digest or "-", mono=True)]),
    ]
    if outcome:
        body.extend(_outcome(request, detail))
    card: Element = {
        "type": "AdaptiveCard",
        "$schema": SCHEMA,
        "version": VERSION,
        "msteams": {"width": "Full"},
        "fallbackText": (
            f"Greenlight: {_ref(request)} is {request.phase.value}. This Teams client cannot "
            f"show the card; see it with: greenlight get {request.name} -n {request.namespace}"
        ),
        "body": body,
    }
    if actions:
        card["actions"] = actions
    return card


def _facts(request: RequestView) -> list[Element]:
    requester = request.requested_by or "unknown"
    if request.on_behalf_of:
        requester += f" on behalf of {request.on_behalf_of}"
    workflow = request.workflow_id + (f" / {request.task_id}" if request.task_id else "")
    rows = [
        ("Action", request.action),
        ("Target", request.target),
        ("Workflow / task", workflow),
        ("Requested by", requester),
        ("Approvals needed", str(request.required_approvals)),
        ("Request", _ref(request)),
    ]
    elements = [_row(name, _rich([_run(value)])) for name, value in rows]
    expires = _when(request.expires_at) if request.expires_at else "never"
    elements.append(_row("Expires", {"type": "TextBlock", "text": expires, "wrap": True}))
    return elements


def _plan(request: RequestView, detail: int) -> list[Element]:
    elements: list[Element] = []
    reading = request.plan_reading
    if reading is not None:
        counts = (
            f"{reading.creates} to create, {reading.updates} to update, "
            f"{reading.deletes} to delete, {reading.replaces} to replace"
        )
        elements.append(_heading(f"Greenlight's reading of the plan ({reading.format})"))
        elements.append({"type": "TextBlock", "text": counts, "wrap": True})
        destroyed = list(reading.destroyed[:DESTROYED_MAX]) if detail > _BRIEF else []
        if destroyed:
            runs = [_run("Destroyed or replaced:\n", weight="Bolder")]
            runs += [_run(f"• {_cut(item, _ITEM_MAX)}\n", mono=True) for item in destroyed]
            if reading.truncated or len(reading.destroyed) > DESTROYED_MAX:
                runs.append(_run("… and more (see status.plan)", subtle=True))
            elements.append(_rich(runs))
    if request.plan_summary:
        elements.append(_heading("Summary, in the requester's words"))
        limit = _SUMMARY_MAX if detail > _BRIEF else _BRIEF_MAX
        elements.append(_rich([_run(_cut(request.plan_summary, limit))]))
    if (reading is not None and reading.destroyed and detail == _BRIEF) or (
        request.plan_preview and detail < _FULL
    ):
        elements.append(_full_plan_note(request))
    elif request.plan_preview:
        text, truncated = plan_preview(request.plan_preview)
        elements.append(_heading("Plan preview"))
        elements.append(_rich([_run(text, mono=True)]))
        if truncated:
            elements.append(_full_plan_note(request))
    return elements


def _outcome(request: RequestView, detail: int) -> list[Element]:
    decision = request.decision
    color = _OUTCOME_COLOR[request.phase]
    if decision is None:
        return [_rich([_run(request.phase.value, weight="Bolder", color=color)])]
    line = f"**{request.phase.value}** via {decision.via.value} at {_when(decision.at)}"
    elements: list[Element] = [
        {"type": "TextBlock", "text": line, "wrap": True, "color": color, "separator": True}
    ]
    if request.phase is not Phase.EXPIRED:
        elements.append(_rich([_run("By ", subtle=True), _run(decision.by, weight="Bolder")]))
    if decision.reason:
        elements.append(
            _rich(
                [
                    _run("Reason: ", subtle=True),
                    _run(_cut(decision.reason, REASON_MAX if detail > _BRIEF else _BRIEF_MAX)),
                ]
            )
        )
    return elements


def _execute(verb: str, title: str, style: str, token: str, *, inputs: str) -> Element:
    data = {DATA_MARK: DATA_VERSION, "token": token}
    return {
        "type": "Action.Execute",
        "verb": verb,
        "title": title,
        "style": style,
        "data": data,
        "associatedInputs": inputs,
        "fallback": {
            "type": "Action.Submit",
            "title": title,
            "style": style,
            "data": {**data, "verb": verb},
            "associatedInputs": inputs,
        },
    }


def _fitted(build: Callable[[int], Element]) -> Element:
    """The card in full; without the plan preview when that is too large; else brief (the
    requester's and deciders' words cut short, the destroyed list left to status.plan)."""
    for detail in (_FULL, _NO_PREVIEW):
        card = build(detail)
        if len(json.dumps(card).encode()) <= MAX_CARD_BYTES:
            return card
    return build(_BRIEF)


def _full_plan_note(request: RequestView) -> Element:
    return _rich(
        [
            _run("Preview only; the full plan is in the ApprovalRequest: ", subtle=True),
            _run(f"kubectl get apr {request.name} -n {request.namespace} -o yaml", mono=True),
        ]
    )


def _row(name: str, value: Element) -> Element:
    return {
        "type": "ColumnSet",
        "spacing": "Small",
        "columns": [
            {
                "type": "Column",
                "width": "120px",
                "items": [{"type": "TextBlock", "text": name, "weight": "Bolder", "wrap": True}],
            },
            {"type": "Column", "width": "stretch", "items": [value]},
        ],
    }


def _heading(text: str) -> Element:
    return {
        "type": "TextBlock",
        "text": text,
        "weight": "Bolder",
        "wrap": True,
        "spacing": "Medium",
    }


def _rich(runs: list[Element]) -> Element:
    return {"type": "RichTextBlock", "inlines": runs}


def _run(
    text: str,
    *,
    weight: str = "",
    size: str = "",
    color: str = "",
    mono: bool = False,
    subtle: bool = False,
) -> Element:
    run: Element = {"type": "TextRun", "text": _cut(text, PREVIEW_MAX_CHARS)}
    if weight:
        run["weight"] = weight
    if size:
        run["size"] = size
    if color:
        run["color"] = color
    if mono:
        run["fontType"] = "Monospace"
    if subtle:
        run["isSubtle"] = True
    return run


def _when(moment: datetime) -> str:
    """Teams shows the DATE/TIME functions in each reader's time zone."""
    stamp = format_time(moment)
    return f"{{{{DATE({stamp}, SHORT)}}}} {{{{TIME({stamp})}}}} ({stamp})"


def _ref(request: RequestView) -> str:
    return f"{request.namespace}/{request.name}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
