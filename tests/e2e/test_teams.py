"""Microsoft Teams end to end (docs/teams.md): one operator process for the whole module.

The operator runs as its own process against the real API server and the fake Teams (Entra ID,
Bot Framework metadata, Bot Connector, over HTTPS with the run's CA). Requests are created with
kubectl as the orchestrator; people click cards (signed invoke activities POSTed to the bot's
messaging endpoint) and decide with kubectl. Scenarios scrape the operator's /metrics and read
its audit log.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from tests.fakes.teams import CONVERSATION, FakeTeams, Forgery, find_action, has_actions, text_of
from tests.support.approvals import Requests
from tests.support.kubectl import Kubectl
from tests.support.manifests import approval_request, create, poll
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People
from tests.support.scrape import scrape
from tests.support.slack_deployment import stop_shared_operator
from tests.support.teams_deployment import DAVE, TeamsDeployment, teams_deployment

from greenlight.devcluster import ControlPlane


@pytest.fixture(scope="module")
def deployment(
    control_plane: ControlPlane,
    operator_process: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TeamsDeployment]:
    stop_shared_operator(operator_process)
    with teams_deployment(control_plane, tmp_path_factory.mktemp("operator-teams")) as running:
        yield running
        running.operator.stop()
        running.log_records()


@pytest.fixture
def teams(deployment: TeamsDeployment) -> Iterator[TeamsDeployment]:
    """The running deployment; Teams is healthy again after each test."""
    if not deployment.operator.running:
        deployment.operator.start()
    yield deployment
    deployment.teams.read(FakeTeams.clear_faults)


@pytest.fixture
def requests(kubectl: Kubectl, people: People) -> Requests:
    """Requests in this test's namespace; `dave@example.com` (named by the members API, not
    the mapping file) is an approver there too."""
    kubectl(
        "-n",
        people.namespace,
        "create",
        "rolebinding",
        "teams-approvers",
        "--clusterrole=greenlight-approver",
        f"--user={DAVE}",
    )
    return Requests(kubectl, people)


@pytest.fixture(scope="module")
def expiring(deployment: TeamsDeployment, module_namespace: str, kubectl: Kubectl) -> str:
    """A request with the shortest timeout, created first, expiring while the others run."""
    create(
        kubectl,
        approval_request(
            "expires-teams",
            module_namespace,
            timeout="1m",
            requester={"workflowId": "wf-expiry-teams"},
        ),
    )
    return module_namespace


@pytest.fixture(autouse=True)
def _expiring_request_starts_early(expiring: str) -> None:
    """Ask for `expiring` in every test, so it is created before the first one."""


def announced(teams: TeamsDeployment, requests: Requests, name: str, **spec: Any) -> Any:
    requests.create(name, **spec)
    requests.notified(name)
    return teams.card_for(requests.namespace, name)


def audits(teams: TeamsDeployment, **match: Any) -> list[dict[str, Any]]:
    return [
        r for r in teams.operator.audit_records() if all(r.get(k) == v for k, v in match.items())
    ]


def about(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in records if (r.get("request") or {}).get("name") == name]


def notified_is(status: dict[str, Any], value: str) -> bool:
    return any(
        c.get("type") == "Notified" and c.get("status") == value
        for c in status.get("conditions") or []
    )


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions") or [] if c.get("type") == kind)


# -- announcing and deciding ----------------------------------------------------------------


def test_request_is_announced_with_one_card_that_status_names(
    teams: TeamsDeployment, requests: Requests
) -> None:
    before = scrape(teams.operator.metrics_port)
    plan = {"summary": "-40 resources", "details": "\n".join(f"- bucket-{i}" for i in range(40))}
    requests.create("announce", plan=plan)
    status = requests.notified("announce")
    card = teams.card_for(requests.namespace, "announce")

    (entry,) = status["notifications"]
    assert (entry["channel"], entry["ref"], entry["via"]) == (CONVERSATION, card.id, "teams")
    assert condition(status, "Notified")["status"] == "True"
    content = card.content
    assert content["version"] == "1.5"
    shown = text_of(content)
    for fact in ("pulumi destroy", "production", status["planDigest"], "-40 resources"):
        assert fact in shown
    assert "bucket-19" in shown
    assert "bucket-20" not in shown, "the preview is bounded"
    assert find_action(content, "approve")["fallback"]["type"] == "Action.Submit"
    after = scrape(teams.operator.metrics_port)
    assert after.since(before, "greenlight_notifications_total", channel="teams", result="success")
    uid = requests.get("announce")["metadata"]["uid"]
    (notified,) = [
        r for r in audits(teams, event="notified") if (r.get("request") or {}).get("uid") == uid
    ]
    assert notified["details"]["ref"] == card.id


def test_approve_click_approves_and_the_card_and_thread_show_it(
    teams: TeamsDeployment, requests: Requests
) -> None:
    card = announced(teams, requests, "approve")
    before = scrape(teams.operator.metrics_port)

    status_code, answer = teams.click("alice", card)
    status = requests.phase("approve", "Approved")

    assert status_code == 200
    assert (
        answer["value"]
        == f"Recorded: you approved {requests.namespace}/approve (1 approval required)."
    )
    decision = status["decision"]
    assert (decision["by"], decision["via"]) == ("alice", "teams")
    assert [(a["user"], a["via"]) for a in status["approvals"]] == [("alice", "teams")]
    updated = teams.updated(card.id)
    assert not has_actions(updated.content)
    assert "via teams" in text_of(updated.content)
    replies = poll(lambda: teams.replies(card.id), 20)
    assert replies[0]["text"].startswith("Approved: pulumi destroy on production")
    requests.wait("approve", lambda s: s["notifications"][0]["state"] == "resolved")
    assert about(
        audits(teams, event="decision_attempted", actor="alice", outcome="allowed"), "approve"
    )
    after = scrape(teams.operator.metrics_port)
    assert after.since(before, "greenlight_requests_decided_total", outcome="approved", via="teams")


def test_deny_with_a_reason_by_a_member_named_by_the_members_api(
    teams: TeamsDeployment, requests: Requests
) -> None:
    card = announced(teams, requests, "deny")

    status_code, _answer = teams.click("dave", card, "deny", reason="change freeze")
    status = requests.phase("deny", "Denied")

    assert status_code == 200
    assert (status["decision"]["by"], status["decision"]["reason"]) == (DAVE, "change freeze")
    assert "change freeze" in text_of(teams.updated(card.id).content)


def test_deny_without_a_reason_is_refused_and_audited(
    teams: TeamsDeployment, requests: Requests
) -> None:
    card = announced(teams, requests, "no-reason")

    _code, answer = teams.click("bob", card, "deny", reason="  ")

    assert answer["value"].startswith("Refused: a deny needs a reason")
    (record,) = poll(lambda: about(audits(teams, reason="reason_required"), "no-reason"), 15)
    assert (record["actor"], record["details"]["via"]) == ("bob", "teams")
    assert requests.status_of("no-reason")["phase"] == "Pending"


@pytest.mark.parametrize(
    ("who", "actor", "reason", "why"),
    [
        ("mallory", "mallory", "not_authorized", "RBAC grants no 'approve' verb"),
        ("erin", "erin@example.com", "not_authorized", "RBAC grants no 'approve' verb"),
        ("stranger", "teams:{oid}", "unknown_user", "does not list you"),
        ("guest", "teams:{oid}", "unknown_user", "is a guest"),
    ],
    ids=["unauthorized-mapped", "unauthorized-unmapped", "unknown", "guest"],
)
def test_people_who_may_not_decide_are_refused_and_audited(
    teams: TeamsDeployment, requests: Requests, who: str, actor: str, reason: str, why: str
) -> None:
    name = f"refused-{who}"
    card = announced(teams, requests, name)
    actor = actor.format(oid=teams.members[who].oid)

    _code, answer = teams.click(who, card)

    assert why in answer["value"]
    (record,) = poll(lambda: about(audits(teams, actor=actor, reason=reason), name), 15)
    assert record["outcome"] == "refused"
    status = requests.status_of(name)
    assert status["phase"] == "Pending"
    assert not status.get("approvals")


def test_a_user_of_another_tenant_is_refused_and_audited(
    teams: TeamsDeployment, requests: Requests
) -> None:
    """Their UPN is dave's, an approver: the tenant alone refuses them."""
    card = announced(teams, requests, "foreign")
    before = scrape(teams.operator.metrics_port)

    _code, answer = teams.click("foreigner", card)

    assert answer["value"].startswith("Refused")
    actor = f"teams:{teams.members['foreigner'].oid}"
    poll(lambda: audits(teams, actor=actor, reason="foreign_tenant"), 15)
    after = scrape(teams.operator.metrics_port)
    assert after.since(
        before, "greenlight_decision_attempts_refused_total", reason="foreign_tenant"
    )
    assert requests.status_of("foreign")["phase"] == "Pending"


FORGERIES = {
    "wrong-key": (Forgery(key="unknown"), "invalid_signature"),
    "wrong-aud": (Forgery(aud="another-bot"), "invalid_signature"),
    "wrong-iss": (Forgery(iss="https://sts.windows.net/evil/"), "invalid_signature"),
    "expired": (Forgery(exp_offset=-400), "stale_timestamp"),
    "not-yet-valid": (Forgery(nbf_offset=400), "stale_timestamp"),
    "alg-none": (Forgery(alg="none"), "invalid_signature"),
    "hs256-app-password": (Forgery(alg="HS256"), "invalid_signature"),
    "missing-endorsement": (Forgery(key="unendorsed"), "invalid_signature"),
    "serviceurl-mismatch": (Forgery(activity_service_url="other"), "invalid_signature"),
}


def test_forged_tokens_are_refused_audited_and_never_decide(
    teams: TeamsDeployment, requests: Requests
) -> None:
    """One request, every forgery: each POST is refused (401) and counted; the first refusal per
    reason is audited at once (later ones in the same minute are aggregated: refusals.py)."""
    card = announced(teams, requests, "forged")
    before = scrape(teams.operator.metrics_port)
    other = f"{teams.teams.fake.base_url}/other/"

    for forged, _reason in FORGERIES.values():
        if forged.activity_service_url:
            forged = Forgery(activity_service_url=other)
        code, answer = teams.click("alice", card, forgery=forged)
        assert code == 401, answer

    after = scrape(teams.operator.metrics_port)
    for reason in {r for _f, r in FORGERIES.values()}:
        expected = sum(1 for _f, r in FORGERIES.values() if r == reason)
        refused = after.since(before, "greenlight_decision_attempts_refused_total", reason=reason)
        assert refused == expected, reason
        record = poll(lambda r=reason: audits(teams, actor="teams:unverified", reason=r), 15)[0]
        assert record["details"]["via"] == "teams"
    assert requests.status_of("forged")["phase"] == "Pending"
    assert not about(audits(teams, event="decision_attempted", outcome="allowed"), "forged")


def test_a_replayed_activity_is_refused_and_counts_once(
    teams: TeamsDeployment, requests: Requests
) -> None:
    card = announced(teams, requests, "replay", policy={"requiredApprovals": 2})
    activity = teams.activity("alice", card)

    assert teams.deliver(activity)[0] == 200
    assert teams.deliver(activity)[0] == 401

    poll(lambda: audits(teams, actor="teams:unverified", reason="replayed"), 15)
    status = requests.wait("replay", lambda s: len(s.get("approvals") or []) == 1)
    assert status["phase"] == "Pending"


def test_a_double_click_is_recorded_once(teams: TeamsDeployment, requests: Requests) -> None:
    card = announced(teams, requests, "double", policy={"requiredApprovals": 2})
    ref = f"{requests.namespace}/double"

    answers = [teams.click("bob", card)[1]["value"] for _ in range(2)]
    requests.wait("double", lambda s: len(s.get("approvals") or []) == 1)
    _code, later = teams.click("bob", card)

    assert answers[0] == f"Recorded: you approved {ref} (2 approvals required)."
    assert answers[1] in {answers[0], f"Your approval of {ref} was already recorded."}
    assert later["value"] == f"Your approval of {ref} was already recorded."
    status = requests.status_of("double")
    assert (status["phase"], [a["user"] for a in status["approvals"]]) == ("Pending", ["bob"])


def test_a_reused_card_token_on_a_decided_request_is_refused(
    teams: TeamsDeployment, requests: Requests
) -> None:
    card = announced(teams, requests, "reused")
    teams.click("alice", card)
    requests.phase("reused", "Approved")

    _code, answer = teams.click("bob", card)  # a new, genuine activity with the same token

    assert answer["type"] == "application/vnd.microsoft.card.adaptive", "the card is brought up"
    shown = text_of(answer["value"])
    assert "Approved" in shown
    assert "alice" in shown
    uid = requests.get("reused")["metadata"]["uid"]
    refused = poll(
        lambda: [
            r
            for r in audits(teams, reason="already_decided")
            if (r.get("request") or {}).get("uid") == uid
        ],
        15,
    )
    assert refused[0]["actor"] == "bob"


# -- resolution from every other path -------------------------------------------------------


def test_a_kubectl_decision_updates_the_card_and_replies_once(
    teams: TeamsDeployment, requests: Requests
) -> None:
    card = announced(teams, requests, "kubectl")

    requests.annotate(
        "kubectl",
        "greenlight.dev/decision=deny",
        "greenlight.dev/reason=wrong stack",
        as_user="carol",
    )
    requests.phase("kubectl", "Denied")

    shown = text_of(teams.updated(card.id).content)
    assert all(part in shown for part in ("Denied", "carol", "via kubectl", "wrong stack"))
    requests.wait("kubectl", lambda s: s["notifications"][0]["state"] == "resolved")
    (reply,) = teams.replies(card.id)
    assert reply["text"].startswith("Denied:")


# -- when Teams misbehaves ------------------------------------------------------------------


def test_a_429_storm_honours_retry_after_and_posts_once(
    teams: TeamsDeployment, requests: Requests
) -> None:
    teams.teams.read(lambda fake: fake.fail("send", 429, times=3, retry_after=1))
    sent_before = len(teams.calls("send"))

    requests.create("ratelimited")
    status = requests.notified("ratelimited", timeout=30)

    attempts = teams.calls("send")[sent_before:]
    assert [c.status for c in attempts] == [429, 429, 429, 201]
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.95 for gap in gaps), gaps
    assert status["notifications"][0]["ref"] == teams.card_for(requests.namespace, "ratelimited").id


def test_a_connector_outage_shows_kubectl_still_decides_and_the_card_catches_up(
    teams: TeamsDeployment, requests: Requests
) -> None:
    before = scrape(teams.operator.metrics_port)
    teams.teams.read(lambda fake: setattr(fake, "outage", True))

    requests.create("outage-decided")
    requests.create("outage-waiting")
    failed = requests.wait("outage-waiting", lambda s: notified_is(s, "False"), timeout=30)
    notified = condition(failed, "Notified")
    assert notified["reason"] == "NotifierUnavailable"
    assert "teams" in notified["message"]
    assert scrape(teams.operator.metrics_port).since(
        before, "greenlight_notifications_total", channel="teams", result="failure"
    )
    requests.annotate("outage-decided", "greenlight.dev/decision=approve", as_user="alice")
    assert requests.phase("outage-decided", "Approved")["decision"]["via"] == "kubectl"

    teams.teams.read(FakeTeams.clear_faults)
    recovered = requests.wait("outage-waiting", lambda s: notified_is(s, "True"), timeout=60)
    card = teams.card_for(requests.namespace, "outage-waiting")
    assert recovered["notifications"][0]["ref"] == card.id
    assert teams.cards_for(requests.namespace, "outage-decided") == []


def test_a_crash_between_post_and_status_write_posts_no_second_card(
    teams: TeamsDeployment, requests: Requests
) -> None:
    """Killed while the post was in flight: Teams holds a card Greenlight cannot look up. No
    second card is posted; the first click on the card names it, and from then on it is the
    request's card (status, update on resolution)."""
    teams.teams.read(lambda fake: fake.respond_late("send", 20))
    sent_before = len(teams.calls("send"))

    requests.create("crash", policy={"requiredApprovals": 2})
    poll(lambda: teams.cards_for(requests.namespace, "crash"), 20)
    teams.operator.kill()
    assert not requests.status_of("crash").get("notifications"), "killed before the status write"

    teams.operator.start()
    waiting = requests.wait("crash", lambda s: notified_is(s, "False"), timeout=30)
    assert "no second card is posted" in condition(waiting, "Notified")["message"]
    time.sleep(1)
    assert len(teams.calls("send")) == sent_before + 1
    (card,) = teams.cards_for(requests.namespace, "crash")

    assert teams.click("alice", card)[0] == 200
    adopted = requests.wait("crash", lambda s: bool(s.get("notifications")), timeout=30)
    assert adopted["notifications"][0]["ref"] == card.id
    assert notified_is(adopted, "True")
    teams.click("bob", card)
    requests.phase("crash", "Approved")
    assert not has_actions(teams.updated(card.id).content)
    assert len(teams.calls("send")) == sent_before + 1


# -- after the other scenarios --------------------------------------------------------------


def test_a_click_after_expiry_is_refused_and_the_card_shows_the_expiry(
    teams: TeamsDeployment, kubectl: Kubectl, expiring: str
) -> None:
    namespace = expiring
    obj = poll(
        lambda: (
            (o := kubectl.json("-n", namespace, "get", "apr/expires-teams"))
            .get("status", {})
            .get("phase")
            == "Expired"
            and o
        ),
        timeout=120,
        interval=0.5,
    )
    assert obj["status"]["decision"]["via"] == "expiry"
    card = teams.card_for(namespace, "expires-teams")
    updated = teams.updated(card.id, timeout=60)
    assert "Expired" in text_of(updated.content)
    as_posted = replace(updated, activity=updated.versions[0])  # someone's stale view of it

    _code, answer = teams.click("alice", as_posted)

    assert answer["type"] == "application/vnd.microsoft.card.adaptive"
    assert "Expired" in text_of(answer["value"])
    poll(
        lambda: [
            r
            for r in audits(teams, actor="alice", reason="already_decided")
            if (r.get("request") or {}).get("name") == "expires-teams"
        ],
        15,
    )


def test_operator_log_is_json_and_holds_no_secret(teams: TeamsDeployment) -> None:
    records = teams.log_records()
    assert any(r["message"] == "teams bot listening" for r in records)
    audit_text = teams.operator.audit_file.read_text()
    assert teams.teams.fake.app_password not in audit_text
    assert not [t for t in teams.teams.read(lambda fake: list(fake.issued)) if t in audit_text]
    assert json.dumps(records[-1])
