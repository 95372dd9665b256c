"""Block Kit rendering: what people see in Slack, as plain functions over a RequestView.

Everything a requester wrote (action, target, plan) is untrusted text: it is escaped so it cannot
mention `@channel`, fake a link or break out of the code block, and it is cut to Slack's field
limits. The plan preview is bounded (PREVIEW_MAX_LINES / PREVIEW_MAX_CHARS); the full plan stays
in the ApprovalRequest and its sha256 (`planDigest`) is shown so people can check what they
approve against what will run. Greenlight's own reading of a machine-readable plan (its counts,
then what it destroys) comes before the requester's summary, which is labelled as theirs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from greenlight.core.model import Phase, RequestView
from greenlight.core.plans import PlanReading
from greenlight.core.timefmt import format_time

Block = dict[str, Any]

APPROVE_ACTION_ID = "greenlight_approve"
DENY_ACTION_ID = "greenlight_deny"
ACTIONS_BLOCK_ID = "greenlight_decision"
DENY_VIEW_CALLBACK_ID = "greenlight_deny"
REASON_BLOCK_ID = "reason"
REASON_ACTION_ID = "reason"

PREVIEW_MAX_LINES = 20
PREVIEW_MAX_CHARS = 2500

# Slack's documented limits for the elements used here.
_HEADER_MAX = 150
_SECTION_MAX = 3000
_FIELD_MAX = 2000
_FALLBACK_MAX = 3000
_REASON_MAX = 3000

_OUTCOME_MARK = {
    Phase.APPROVED: ":white_check_mark:",
    Phase.DENIED: ":no_entry:",
    Phase.EXPIRED: ":hourglass:",
    Phase.CANCELLED: ":heavy_multiplication_x:",
    Phase.PENDING: ":hourglass_flowing_sand:",
}


@dataclass(frozen=True)
class RenderedMessage:
    """A message body for chat.postMessage / chat.update: fallback text plus blocks."""

    text: str
    blocks: list[Block]


@dataclass(frozen=True)
class DenyModalContext:
    """What the deny modal carries through Slack (`private_metadata`) to its submission."""

    token: str
    channel: str
    message_ts: str

    def encode(self) -> str:
        return json.dumps({"token": self.token, "channel": self.channel, "ts": self.message_ts})

    @classmethod
    def decode(cls, text: str) -> DenyModalContext:
        """Raises ValueError when the metadata is not what `encode` produced."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("private_metadata is not an object")
        fields = (data.get("token"), data.get("channel"), data.get("ts"))
        if not all(isinstance(value, str) for value in fields):
            raise ValueError("private_metadata lacks token, channel or ts")
        token, channel, ts = (str(value) for value in fields)
        return cls(token=token, channel=channel, message_ts=ts)


def escape(text: str) -> str:
    """Slack's mandatory escaping for text shown as mrkdwn (&, <, >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plan_preview(details: str) -> tuple[str, bool]:
    """The first PREVIEW_MAX_LINES lines / PREVIEW_MAX_CHARS characters; True when cut."""
    lines = details.splitlines()
    preview = "\n".join(lines[:PREVIEW_MAX_LINES])
    truncated = len(lines) > PREVIEW_MAX_LINES
    if len(preview) > PREVIEW_MAX_CHARS:
        preview = preview[:PREVIEW_MAX_CHARS]
        truncated = True
    return preview, truncated


def pending_message(request: RequestView, approve_token: str, deny_token: str) -> RenderedMessage:
    """The announcement: facts, bounded plan preview, and the Approve / Deny buttons."""
    blocks = [
        *_facts(request, f"Approval needed: {request.action}"),
        {
            "type": "actions",
            "block_id": ACTIONS_BLOCK_ID,
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION_ID,
                    "text": {"type": "plain_text", "text": "Approve"},
                    "style": "primary",
                    "value": approve_token,
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Approve this request?"},
                        "text": {
                            "type": "mrkdwn",
                            "text": _cut(
                                f"Approve *{escape(request.action)}* on "
                                f"*{escape(request.target)}*? Plan digest "
                                f"`{escape(request.plan_digest)}`.",
                                _SECTION_MAX,
                            ),
                        },
                        "confirm": {"type": "plain_text", "text": "Approve"},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                        "style": "primary",
                    },
                },
                {
                    "type": "button",
                    "action_id": DENY_ACTION_ID,
                    "text": {"type": "plain_text", "text": "Deny"},
                    "style": "danger",
                    "value": deny_token,
                },
            ],
        },
    ]
    text = f"Approval needed: {request.action} on {request.target} ({_ref(request)})"
    if request.plan_reading is not None:
        text = f"{text}: {request.plan_reading.headline()}"
    return RenderedMessage(text=_cut(text, _FALLBACK_MAX), blocks=blocks)


def resolved_message(request: RequestView) -> RenderedMessage:
    """The same facts with the buttons replaced by the outcome: who, when, via which path, why."""
    outcome = outcome_line(request)
    blocks = [
        *_facts(request, f"{request.phase.value}: {request.action}"),
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(outcome, _SECTION_MAX)}},
    ]
    text = f"{request.phase.value}: {request.action} on {request.target} ({_ref(request)})"
    return RenderedMessage(text=_cut(text, _FALLBACK_MAX), blocks=blocks)


def outcome_line(request: RequestView) -> str:
    """One mrkdwn line that says how the request ended (also the thread reply)."""
    mark = _OUTCOME_MARK[request.phase]
    decision = request.decision
    if decision is None:
        return f"{mark} *{request.phase.value}*"
    by = "" if request.phase is Phase.EXPIRED else f" by *{escape(decision.by)}*"
    line = f"{mark} *{request.phase.value}*{by} via {decision.via.value} at {_when(decision.at)}"
    if decision.reason:
        line += f"\n>{escape(_cut(decision.reason, _REASON_MAX)).replace(chr(10), chr(10) + '>')}"
    return line


def deny_modal(request: RequestView, context: DenyModalContext) -> Block:
    """The modal a Deny click opens: the reason is required (Slack enforces it client-side)."""
    return {
        "type": "modal",
        "callback_id": DENY_VIEW_CALLBACK_ID,
        "private_metadata": context.encode(),
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _cut(
                        f"Deny *{escape(request.action)}* on *{escape(request.target)}* "
                        f"(`{escape(_ref(request))}`)?",
                        _SECTION_MAX,
                    ),
                },
            },
            {
                "type": "input",
                "block_id": REASON_BLOCK_ID,
                "optional": False,
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_ACTION_ID,
                    "multiline": True,
                    "min_length": 1,
                    "max_length": _REASON_MAX,
                },
            },
        ],
    }


def _facts(request: RequestView, title: str) -> list[Block]:
    requester = request.requested_by or "unknown"
    if request.on_behalf_of:
        requester += f" on behalf of {request.on_behalf_of}"
    workflow = request.workflow_id + (f" / {request.task_id}" if request.task_id else "")
    expires = _when(request.expires_at) if request.expires_at else "never"
    fields = [
        ("Action", request.action),
        ("Target", request.target),
        ("Workflow / task", workflow),
        ("Requested by", requester),
        ("Approvals needed", str(request.required_approvals)),
    ]
    field_blocks: list[Block] = [
        {"type": "mrkdwn", "text": _cut(f"*{name}*\n{escape(value)}", _FIELD_MAX)}
        for name, value in fields
    ]
    field_blocks.append({"type": "mrkdwn", "text": f"*Expires*\n{expires}"})
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, _HEADER_MAX)}},
        {"type": "section", "fields": field_blocks},
    ]
    if request.plan_reading is not None:
        reading = _plan_reading(request.plan_reading)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": reading}})
    if request.plan_summary:
        summary = f"*Summary, in the requester's words*\n{escape(request.plan_summary)}"
        summary = _cut(summary, _SECTION_MAX)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": summary}})
    if request.plan_preview:
        preview, truncated = plan_preview(request.plan_preview)
        code = _code(preview)
        while len(code) > PREVIEW_MAX_CHARS:  # escaping grew it: drop raw text until it fits
            preview = preview[: len(preview) - (len(code) - PREVIEW_MAX_CHARS)]
            code, truncated = _code(preview), True
        body = f"```{code}```"
        if truncated:
            body += (
                f"\n_Preview only; the full plan is in the ApprovalRequest: "
                f"`kubectl get apr {escape(request.name)} -n {escape(request.namespace)} -o yaml`_"
            )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"Plan digest `{escape(request.plan_digest or '-')}`"},
                {"type": "mrkdwn", "text": f"Request `{escape(_ref(request))}`"},
            ],
        }
    )
    return blocks


def _plan_reading(reading: PlanReading) -> str:
    """Greenlight's own counts, then the resources the plan destroys, as many as fit one
    section (the rest are counted)."""
    mark = ":warning: " if reading.destroys else ""
    text = f"*Greenlight's reading of the plan* ({reading.format})\n{mark}{reading.headline()}"
    if not reading.destroys:
        return text
    heading = "\n*Destroyed or replaced*\n"
    room = _SECTION_MAX - len(text) - len(f"{heading}``````\n… and 1000000000 more")
    names: list[str] = []
    for name in reading.destroyed:
        room -= len(_code(name)) + 1
        if room < 0:
            break
        names.append(_code(name))
    more = reading.destroys - len(names)
    listed = "\n".join(names) + (f"\n… and {more} more" if more else "")
    return f"{text}{heading}```{listed}```"


def _ref(request: RequestView) -> str:
    return f"{request.namespace}/{request.name}"


def _when(moment: datetime) -> str:
    """Slack's date token shows local time to each reader; the fallback is RFC 3339 UTC."""
    epoch = int(moment.timestamp())
    return f"<!date^{epoch}^{{date_short_pretty}} {{time}}|{format_time(moment)}>"


def _code(text: str) -> str:
    """Text safe inside a ``` block: escaped, and unable to close the block early."""
    return escape(text).replace("```", "`\u200b`\u200b`")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
