"""Slack end to end (docs/slack.md), in HTTP mode and in Socket Mode alike.

The operator runs as its own process against the real API server and the fake Slack; requests
are created with kubectl as the orchestrator; people click in "Slack" (signed POSTs to the
interactions endpoint, or envelopes over the WebSocket) and decide with kubectl. Each scenario
also scrapes the operator's real /metrics and checks that the numbers moved as they should.
"""

from __future__ import annotations

import itertools
import json
import secrets
import socket
import time
from typing import Any

import pytest
from tests.fakes.slack import FakeSlack, Payload
from tests.support.approvals import Requests
from tests.support.kubectl import Kubectl
from tests.support.manifests import approval_request, create, poll
from tests.support.scrape import exemplars, scrape
from tests.support.slack_deployment import (
    APPROVE_ACTION_ID,
    CHANNEL,
    DENY_ACTION_ID,
    SLACK_ID,
    STRANGER,
    SlackDeployment,
    button,
    has_buttons,
    text_of,
    wait_socket_again,
)

from greenlight.core.model import ANN_TRACEPARENT

ALICE, BOB, MALLORY = SLACK_ID["alice"], SLACK_ID["bob"], SLACK_ID["mallory"]
EXPIRY_CHANNEL = "C0EXPIRY1"
PLAN = "\n".join(f"- aws:s3:Bucket logs-{i:02d} delete" for i in range(40))


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in status.get("conditions") or [] if c.get("type") == kind]
    assert found, f"no {kind} condition in {json.dumps(status)}"
    return dict(found[0])


def notified_is(status: dict[str, Any], value: str) -> bool:
    return any(
        c.get("type") == "Notified" and c.get("status") == value
        for c in status.get("conditions") or []
    )


def uid_of(call_args: dict[str, Any]) -> str:
    metadata = call_args.get("metadata") or {}
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return str((metadata.get("event_payload") or {}).get("uid", ""))


def audit_records(slack: SlackDeployment, **match: Any) -> list[dict[str, Any]]:
    return [
        record
        for record in slack.operator.audit_records()
        if all(record.get(key) == value for key, value in match.items())
    ]


def wait_audit(slack: SlackDeployment, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
    found: list[dict[str, Any]] = poll(lambda: audit_records(slack, **match), timeout)
    return found[0]


def announced(slack: SlackDeployment, requests: Requests, name: str, **spec: Any) -> Payload:
    """Create a request and return its Slack message once the status records it."""
    uid = requests.create(name, **spec)
    requests.notified(name)
    return slack.message_for(uid)


@pytest.fixture(scope="module")
def expiring(
    slack_deployment_running: SlackDeployment, module_namespace: str, kubectl: Kubectl
) -> tuple[str, str]:
    """A request with the shortest timeout (1m), created when the module starts, so that its
    expiry happens while the other scenarios run. Its own channel keeps it clear of their
    injected faults."""
    name = f"expires-{slack_deployment_running.mode}"
    manifest = approval_request(
        name,
        module_namespace,
        timeout="1m",
        requester={"workflowId": f"wf-expiry-{slack_deployment_running.mode}"},
        notify={"slack": {"channel": EXPIRY_CHANNEL}},
    )
    create(kubectl, manifest)
    return module_namespace, name


@pytest.fixture(autouse=True)
def _expiring_request_starts_early(expiring: tuple[str, str]) -> None:
    """Ask for `expiring` in every test, so it is created before the first one."""


@pytest.fixture
def metrics_port(slack: SlackDeployment) -> int:
    return slack.operator.metrics_port


# -- announcing ------------------------------------------------------------------------------


def test_request_is_announced_once_with_buttons_digest_and_bounded_preview(
    slack: SlackDeployment, requests: Requests, metrics_port: int
) -> None:
    before = scrape(metrics_port)
    uid = requests.create("announce", plan={"summary": "-40 resources", "details": PLAN})
    status = requests.notified("announce")
    message = slack.message_for(uid)

    (entry,) = status["notifications"]
    assert (entry["channel"], entry["ref"], entry["state"]) == (CHANNEL, message["ts"], "sent")
    assert condition(status, "Notified")["status"] == "True"
    text = text_of(message)
    for fact in ("pulumi destroy", "production", status["planDigest"], "-40 resources"):
        assert fact in text
    assert "wf-announce-" in text
    assert "logs-00 delete" in text
    assert "logs-19 delete" in text
    assert "logs-20" not in text, "the preview is bounded to 20 lines"
    approve, deny = button(message, APPROVE_ACTION_ID), button(message, DENY_ACTION_ID)
    assert approve != deny
    assert "announce" not in approve, "button values are opaque tokens, not request names"
    assert uid not in approve
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    assert "confirm" in actions["elements"][0], "Approve asks for confirmation"

    after = scrape(metrics_port)
    assert after.since(before, "greenlight_requests_created_total") == 1
    assert after.since(before, "greenlight_notifications_total", channel="slack", result="success")
    assert after.since(before, "greenlight_notification_duration_seconds_count", channel="slack")
    assert wait_audit(slack, event="notified", outcome="sent")["request"] is not None


def test_request_channel_overrides_the_default_channel(
    slack: SlackDeployment, requests: Requests
) -> None:
    uid = requests.create("elsewhere", notify={"slack": {"channel": "C0OTHER01"}})
    status = requests.notified("elsewhere")
    message = slack.message_for(uid, channel="C0OTHER01")
    assert status["notifications"][0]["ref"] == message["ts"]
    assert slack.messages_for(uid) == []


# -- deciding in Slack -----------------------------------------------------------------------


def test_signed_approve_click_approves_and_rewrites_the_message(
    slack: SlackDeployment, requests: Requests, metrics_port: int
) -> None:
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    message = announced(slack, requests, "approve", annotations={ANN_TRACEPARENT: traceparent})
    before = scrape(metrics_port)

    assert slack.click(ALICE, message, APPROVE_ACTION_ID) == 200
    status = requests.phase("approve", "Approved")

    decision = status["decision"]
    assert (decision["outcome"], decision["by"], decision["via"]) == ("Approved", "alice", "slack")
    assert [(a["user"], a["via"]) for a in status["approvals"]] == [("alice", "slack")]
    slack.wait_ephemeral(ALICE, "Recorded: you approved")
    updated = slack.updated(message["ts"])
    assert not has_buttons(updated), "the buttons are gone once the request is decided"
    shown = text_of(updated)
    assert "Approved" in shown
    assert "alice" in shown
    assert "via slack" in shown
    replies = poll(lambda: slack.replies(message["ts"]), 20)
    assert len(replies) == 1
    assert "Approved" in replies[0]["text"]
    requests.wait("approve", lambda s: s["notifications"][0]["state"] == "resolved")
    wait_audit(slack, event="decision_attempted", actor="alice", outcome="allowed")
    wait_audit(slack, event="decided", actor="alice")

    after = scrape(metrics_port)
    decided = after.since(
        before, "greenlight_requests_decided_total", outcome="approved", via="slack"
    )
    assert decided == 1
    duration = "greenlight_decision_duration_seconds"
    assert after.since(before, f"{duration}_count", outcome="approved") == 1
    assert after.since(before, f"{duration}_bucket", outcome="approved", le="30.0") == 1
    marked = [
        e
        for e in exemplars(metrics_port)
        if e.name == f"{duration}_bucket" and e.exemplar_labels.get("trace_id") == trace_id
    ]
    assert marked, "the decision duration carries the request's trace id as exemplar"
    assert marked[0].labels == {"outcome": "approved", "le": "30.0"}


def test_deny_through_the_form_records_the_reason(
    slack: SlackDeployment, requests: Requests, metrics_port: int
) -> None:
    message = announced(slack, requests, "deny")
    before = scrape(metrics_port)

    assert slack.deny_with_reason(BOB, message, "change freeze until Monday") == 200
    status = requests.phase("deny", "Denied")

    (opened,) = [c for c in slack.calls("views.open") if c.status == 200][-1:]
    view = opened.args["view"]
    view = json.loads(view) if isinstance(view, str) else view
    reason_block = next(b for b in view["blocks"] if b["type"] == "input")
    assert reason_block["optional"] is False, "the form requires a reason"
    decision = status["decision"]
    assert (decision["by"], decision["via"]) == ("bob", "slack")
    assert decision["reason"] == "change freeze until Monday"
    updated = slack.updated(message["ts"])
    assert not has_buttons(updated)
    assert "Denied" in text_of(updated)
    assert "change freeze until Monday" in text_of(updated)
    after = scrape(metrics_port)
    assert after.since(before, "greenlight_requests_decided_total", outcome="denied", via="slack")


def test_approver_without_the_rbac_verb_is_refused_and_audited(
    slack: SlackDeployment, requests: Requests, metrics_port: int
) -> None:
    message = announced(slack, requests, "mallory")
    before = scrape(metrics_port)

    assert slack.click(MALLORY, message, APPROVE_ACTION_ID) == 200

    assert "Refused" in slack.wait_ephemeral(MALLORY, "Refused")
    record = wait_audit(slack, event="decision_attempted", actor="mallory", outcome="refused")
    assert record["reason"] == "not_authorized"
    assert record["details"]["via"] == "slack"
    assert record["request"]["name"] == "mallory"
    status = requests.status_of("mallory")
    assert status["phase"] == "Pending"
    assert not status.get("approvals")
    after = scrape(metrics_port)
    assert after.since(
        before, "greenlight_decision_attempts_refused_total", reason="not_authorized"
    )


def test_unknown_slack_user_is_refused_and_audited(
    slack: SlackDeployment, requests: Requests, metrics_port: int
) -> None:
    message = announced(slack, requests, "stranger")
    before = scrape(metrics_port)

    assert slack.click(STRANGER, message, APPROVE_ACTION_ID) == 200

    assert STRANGER in slack.wait_ephemeral(STRANGER, "Refused")
    record = wait_audit(slack, event="decision_attempted", actor=f"slack:{STRANGER}")
    assert (record["outcome"], record["reason"]) == ("refused", "unknown_user")
    assert requests.status_of("stranger")["phase"] == "Pending"
    after = scrape(metrics_port)
    assert after.since(before, "greenlight_decision_attempts_refused_total", reason="unknown_user")


# -- who clicked: identities from Slack emails (email-localpart, domain example.com) ---------


def _refusals_of(slack: SlackDeployment, name: str, **match: Any) -> list[dict[str, Any]]:
    return [
        record
        for record in audit_records(slack, event="decision_attempted", outcome="refused", **match)
        if (record.get("request") or {}).get("name") == name
    ]


@pytest.mark.parametrize(
    ("slack_id", "email", "flags", "why"),
    [
        ("U0EVILALI", "alice@evil.example", {}, "email domain 'evil.example'"),
        ("U0GUEST01", "alice@example.com", {"is_restricted": True}, "is a guest"),
        ("U0OTHERWS", "alice@example.com", {"team_id": "T0OTHER001"}, "another workspace"),
        ("U0CONNECT", "alice@example.com", {"is_stranger": True}, "another workspace"),
    ],
    ids=["other-domain", "guest", "other-workspace", "slack-connect"],
)
def test_email_identity_from_outside_the_workspace_is_refused_and_audited(
    slack: SlackDeployment,
    requests: Requests,
    slack_id: str,
    email: str,
    flags: dict[str, Any],
    why: str,
) -> None:
    """Each of these Slack accounts would have been `alice` (an approver) by its email."""
    name = f"outsider-{slack_id.lower()}"
    message = announced(slack, requests, name)
    slack.slack.read(lambda fake: fake.add_user(slack_id, email, **flags))

    assert slack.click(slack_id, message, APPROVE_ACTION_ID) == 200

    assert why in slack.wait_ephemeral(slack_id, "Refused")
    (record,) = poll(lambda: _refusals_of(slack, name, actor=f"slack:{slack_id}"), 15)
    assert record["reason"] == "unknown_user"
    assert why in record["details"]["message"]
    status = requests.status_of(name)
    assert status["phase"] == "Pending"
    assert not status.get("approvals")


def test_onbehalfof_human_is_refused_through_slack_under_her_email_identity(
    slack: SlackDeployment, requests: Requests
) -> None:
    """onBehalfOf names her by email; her Slack email maps to `alice`: still the requester."""
    name = "on-behalf"
    requester = {"workflowId": f"wf-on-behalf-{slack.mode}", "onBehalfOf": "Alice@Example.com"}
    message = announced(slack, requests, name, requester=requester)
    slack.slack.read(lambda fake: fake.add_user("U0ALICEML", "alice@example.com"))

    assert slack.click("U0ALICEML", message, APPROVE_ACTION_ID) == 200

    assert "cannot approve it" in slack.wait_ephemeral("U0ALICEML", "Refused")
    (record,) = poll(lambda: _refusals_of(slack, name, actor="alice"), 15)
    assert record["reason"] == "self_approval"
    status = requests.status_of(name)
    assert status["phase"] == "Pending"
    assert not status.get("approvals")


def test_tampered_button_token_is_refused_and_audited(
    slack: SlackDeployment, requests: Requests, metrics_port: int
) -> None:
    message = announced(slack, requests, "tampered")
    value = button(message, APPROVE_ACTION_ID)
    middle = len(value) // 2
    tampered = value[:middle] + ("A" if value[middle] != "A" else "B") + value[middle + 1 :]
    before = scrape(metrics_port)

    assert slack.click(ALICE, message, APPROVE_ACTION_ID, value=tampered) == 200

    assert "not issued by Greenlight" in slack.wait_ephemeral(ALICE, "Refused")
    record = wait_audit(slack, event="decision_attempted", reason="invalid_token")
    assert (record["actor"], record["outcome"]) == (f"slack:{ALICE}", "refused")
    assert requests.status_of("tampered")["phase"] == "Pending"
    after = scrape(metrics_port)
    assert after.since(before, "greenlight_decision_attempts_refused_total", reason="invalid_token")


# -- requests that are not what Slack sent ---------------------------------------------------


def _click_payload(slack: SlackDeployment, user: str, message: Payload) -> Payload:
    return slack.slack.read(
        lambda fake: fake.block_actions(
            user=user,
            action_id=APPROVE_ACTION_ID,
            value=button(message, APPROVE_ACTION_ID),
            channel=CHANNEL,
            message_ts=str(message["ts"]),
        )
    )


def _assert_no_inbound_endpoint(slack: SlackDeployment) -> None:
    """Socket Mode has nothing to forge against: the operator listens for no interactions."""
    port = int(slack.operator.environment()["GREENLIGHT_SLACK_INTERACTIONS_PORT"])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ({"secret": "not-the-signing-secret"}, "invalid_signature"),
        ({"timestamp_offset": -6 * 60}, "stale_timestamp"),
    ],
    ids=["forged-signature", "stale-timestamp"],
)
def test_unauthentic_interaction_is_refused_audited_and_never_decides(
    slack: SlackDeployment,
    requests: Requests,
    metrics_port: int,
    forgery: dict[str, Any],
    reason: str,
) -> None:
    if slack.mode == "socket":
        _assert_no_inbound_endpoint(slack)
        return
    name = f"forged-{reason.replace('_', '-')}"
    message = announced(slack, requests, name)
    payload = _click_payload(slack, ALICE, message)
    timestamp = int(time.time()) + int(forgery.get("timestamp_offset", 0))
    signed = slack.slack.read(
        lambda fake: fake.sign(payload, secret=forgery.get("secret"), timestamp=timestamp)
    )
    before, told = scrape(metrics_port), len(slack.calls("chat.postEphemeral"))

    assert slack.post(signed) == 401

    record = wait_audit(slack, event="decision_attempted", reason=reason)
    assert (record["actor"], record["outcome"]) == ("slack:unverified", "refused")
    after = scrape(metrics_port)
    assert after.since(before, "greenlight_decision_attempts_refused_total", reason=reason) == 1
    assert requests.status_of(name)["phase"] == "Pending"
    allowed = audit_records(slack, event="decision_attempted", outcome="allowed")
    assert not [r for r in allowed if r["request"]["name"] == name]
    assert len(slack.calls("chat.postEphemeral")) == told, (
        "an unauthenticated payload is not answered"
    )


def test_replayed_interaction_is_handled_once(
    slack: SlackDeployment, requests: Requests, metrics_port: int
) -> None:
    message = announced(slack, requests, "replay", policy={"requiredApprovals": 2})
    payload = _click_payload(slack, ALICE, message)
    before = scrape(metrics_port)

    if slack.mode == "http":
        signed = slack.slack.read(lambda fake: fake.sign(payload))
        assert slack.post(signed) == 200
        assert slack.post(signed) == 401
        record = wait_audit(slack, event="decision_attempted", reason="replayed")
        assert record["outcome"] == "refused"
        after = scrape(metrics_port)
        assert after.since(before, "greenlight_decision_attempts_refused_total", reason="replayed")
    else:
        # Slack redelivers an envelope it thinks was not acknowledged: same envelope id.
        for _ in range(2):
            slack.slack.run(slack.fake.push(payload, envelope_id="env-replay", within=10))
    requests.wait("replay", lambda s: len(s.get("approvals") or []) == 1)
    slack.wait_ephemeral(ALICE, "Recorded: you approved")
    # A click from someone else afterwards marks the point by which a second run would be done.
    assert slack.click(MALLORY, message, APPROVE_ACTION_ID) == 200
    wait_audit(slack, event="decision_attempted", actor="mallory", outcome="refused")
    allowed = audit_records(slack, event="decision_attempted", actor="alice", outcome="allowed")
    assert len([r for r in allowed if r["request"]["name"] == "replay"]) == 1
    status = requests.status_of("replay")
    assert status["phase"] == "Pending"
    assert [a["user"] for a in status["approvals"]] == ["alice"]


def test_click_on_a_decided_request_says_who_decided_it(
    slack: SlackDeployment, requests: Requests, metrics_port: int
) -> None:
    message = announced(slack, requests, "decided")
    requests.annotate("decided", "greenlight.dev/decision=approve", as_user="bob")
    requests.phase("decided", "Approved")
    updated = slack.updated(message["ts"])
    assert not has_buttons(updated)
    assert "bob" in text_of(updated)
    assert "via kubectl" in text_of(updated)
    before = scrape(metrics_port)

    assert slack.click(ALICE, message, APPROVE_ACTION_ID) == 200

    assert "already Approved by bob" in slack.wait_ephemeral(ALICE, "already")
    uid = requests.get("decided")["metadata"]["uid"]
    refused = poll(
        lambda: [
            r
            for r in audit_records(slack, event="decision_attempted", outcome="refused")
            if (r.get("request") or {}).get("uid") == uid
        ],
        15,
    )
    assert [(r["actor"], r["reason"]) for r in refused] == [("alice", "already_decided")]
    after = scrape(metrics_port)
    assert after.since(
        before, "greenlight_decision_attempts_refused_total", reason="already_decided"
    )
    assert requests.status_of("decided")["decision"]["by"] == "bob"


# -- resolution from every other path --------------------------------------------------------


def test_kubectl_deny_rewrites_the_message_and_replies_once(
    slack: SlackDeployment, requests: Requests, metrics_port: int
) -> None:
    message = announced(slack, requests, "kubectl-deny")
    before = scrape(metrics_port)

    requests.annotate(
        "kubectl-deny",
        "greenlight.dev/decision=deny",
        "greenlight.dev/reason=wrong stack",
        as_user="carol",
    )
    requests.phase("kubectl-deny", "Denied")

    updated = slack.updated(message["ts"])
    shown = text_of(updated)
    assert not has_buttons(updated)
    assert all(part in shown for part in ("Denied", "carol", "via kubectl", "wrong stack"))
    requests.wait("kubectl-deny", lambda s: s["notifications"][0]["state"] == "resolved")
    (reply,) = slack.replies(message["ts"])
    assert "Denied" in reply["text"]
    after = scrape(metrics_port)
    assert after.since(before, "greenlight_requests_decided_total", outcome="denied", via="kubectl")


def test_cancel_by_the_requester_rewrites_the_message(
    slack: SlackDeployment, requests: Requests
) -> None:
    message = announced(slack, requests, "cancel")

    requests.annotate("cancel", "greenlight.dev/cancel=true", as_user=requests.people.orchestrator)
    requests.phase("cancel", "Cancelled")

    updated = slack.updated(message["ts"])
    assert not has_buttons(updated)
    assert "Cancelled" in text_of(updated)
    assert len(poll(lambda: slack.replies(message["ts"]), 20)) == 1


# -- when Slack misbehaves -------------------------------------------------------------------


def test_rate_limit_storm_honours_retry_after_and_posts_once(
    slack: SlackDeployment, requests: Requests
) -> None:
    slack.slack.read(
        lambda fake: fake.fail(
            "chat.postMessage", status=429, retry_after=1, times=3, channel=CHANNEL
        )
    )

    uid = requests.create("ratelimited")
    status = requests.notified("ratelimited", timeout=30)

    attempts = [c for c in slack.calls("chat.postMessage") if uid_of(c.args) == uid]
    assert [c.status for c in attempts] == [429, 429, 429, 200]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    assert all(gap >= 0.95 for gap in gaps), f"Retry-After: 1 was not honoured: {gaps}"
    message = slack.message_for(uid)
    assert status["notifications"][0]["ref"] == message["ts"]


def test_slack_outage_is_visible_kubectl_still_decides_and_notification_catches_up(
    slack: SlackDeployment, requests: Requests, metrics_port: int
) -> None:
    before = scrape(metrics_port)
    slack.slack.read(lambda fake: setattr(fake, "outage", True))

    uid_decided = requests.create("outage-decided")
    uid_waiting = requests.create("outage-waiting")
    failed = requests.wait("outage-waiting", lambda s: notified_is(s, "False"), timeout=30)
    notified = condition(failed, "Notified")
    assert (notified["status"], notified["reason"]) == ("False", "NotifierUnavailable")
    assert "slack" in notified["message"]
    assert failed["phase"] == "Pending"
    workflow_id = requests.get("outage-waiting")["spec"]["requester"]["workflowId"]
    retried = poll(
        lambda: [
            r for r in slack.log_records() if r["level"] == "ERROR" and r.get("uid") == uid_waiting
        ],
        10,
    )
    assert retried[0]["workflow_id"] == workflow_id, "lines about a request carry its ids"
    assert scrape(metrics_port).since(
        before, "greenlight_notifications_total", channel="slack", result="failure"
    )

    requests.annotate("outage-decided", "greenlight.dev/decision=approve", as_user="alice")
    assert requests.phase("outage-decided", "Approved")["decision"]["via"] == "kubectl"

    slack.slack.read(FakeSlack.clear_faults)
    recovered = requests.wait("outage-waiting", lambda s: notified_is(s, "True"), timeout=60)
    message = slack.message_for(uid_waiting)
    assert recovered["notifications"][0]["ref"] == message["ts"]
    assert slack.messages_for(uid_decided) == [], "a request decided unannounced is not posted"


def test_crash_between_post_and_status_write_still_leaves_one_message(
    slack: SlackDeployment, requests: Requests
) -> None:
    slack.slack.read(lambda fake: fake.respond_late("chat.postMessage", 20, channel=CHANNEL))

    uid = requests.create("crash")
    poll(lambda: [c for c in slack.calls("chat.postMessage") if uid_of(c.args) == uid], 20)
    slack.operator.kill()
    assert not requests.status_of("crash").get("notifications"), "killed before the status write"
    assert len(slack.messages_for(uid)) == 1, "Slack stored the message"

    restarted_at = time.time()
    slack.operator.start()
    wait_socket_again(slack, restarted_at)
    status = requests.notified("crash", timeout=30)

    (message,) = slack.messages_for(uid)
    assert status["notifications"][0]["ref"] == message["ts"]
    posts = [c for c in slack.calls("chat.postMessage") if uid_of(c.args) == uid]
    assert len(posts) == 1, "after the restart the earlier message was found, not reposted"
    # The recovered message is the live one: a click on it decides, and it is rewritten.
    assert slack.click(ALICE, message, APPROVE_ACTION_ID) == 200
    requests.phase("crash", "Approved")
    assert not has_buttons(slack.updated(message["ts"]))


# -- after the other scenarios ---------------------------------------------------------------


def test_expiry_rewrites_the_message(
    slack: SlackDeployment, kubectl: Kubectl, expiring: tuple[str, str]
) -> None:
    namespace, name = expiring
    obj = poll(
        lambda: (
            (o := kubectl.json("-n", namespace, "get", f"apr/{name}"))
            .get("status", {})
            .get("phase")
            == "Expired"
            and o
        ),
        timeout=120,
        interval=0.5,
    )
    decision = obj["status"]["decision"]
    assert (decision["outcome"], decision["via"]) == ("Expired", "expiry")
    message = slack.message_for(obj["metadata"]["uid"], channel=EXPIRY_CHANNEL)
    updated = slack.updated(message["ts"], channel=EXPIRY_CHANNEL, timeout=60)
    assert not has_buttons(updated)
    assert "Expired" in text_of(updated)
    assert len(poll(lambda: slack.replies(message["ts"], EXPIRY_CHANNEL), 30)) == 1


def test_operator_log_is_json_with_request_context_and_no_secret(slack: SlackDeployment) -> None:
    records = slack.log_records()
    assert len(records) > 50
    expiry_lines = [r for r in records if r["workflow_id"] == f"wf-expiry-{slack.mode}"]
    assert expiry_lines, "lines logged while handling a request carry its workflow_id"
    assert any(r["trace_id"] and r["span_id"] for r in expiry_lines)
    assert any(r["logger"].startswith("kopf.") for r in records), "kopf's lines are JSON too"
    audit_text = slack.operator.audit_file.read_text()
    assert not [s for s in slack.credentials.all if s in audit_text]
