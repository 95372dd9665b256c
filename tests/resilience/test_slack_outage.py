"""Slack is down for a while: requests stay correct, kubectl decisions work, posts catch up.

The outage is 20 s here (not a minute) to keep the suite short: it spans several delivery
attempts (each one already retries 5xx with backoff) and one operator retry cycle (15 s).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.resilience.cluster import Requests, manifest, phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.devcluster import ControlPlane
from greenlight.devcluster.controlplane import free_port

CHANNEL = "C0OUTAGE01"
OUTAGE_SECONDS = 20.0


def slack_operator(plane: ControlPlane, workdir: Path, slack: FakeSlack) -> OperatorProcess:
    user_map = workdir / "slack-users.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    user_map.write_text("U0ALICE001: alice\n")
    return OperatorProcess(
        plane,
        workdir,
        env={
            "GREENLIGHT_SLACK_BOT_TOKEN": BOT_TOKEN,
            "GREENLIGHT_SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "GREENLIGHT_SLACK_API_URL": slack.api_url,
            "GREENLIGHT_SLACK_DEFAULT_CHANNEL": CHANNEL,
            "GREENLIGHT_SLACK_MODE": "http",
            "GREENLIGHT_SLACK_INTERACTIONS_PORT": str(free_port()),
            "GREENLIGHT_SLACK_USER_MAP_FILE": str(user_map),
        },
    )


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def posts_for(slack: FakeSlack, uid: str) -> list[dict[str, Any]]:
    return [
        m
        for m in slack.messages(CHANNEL)
        if ((m.get("metadata") or {}).get("event_payload") or {}).get("uid") == uid
    ]


async def test_slack_outage_keeps_requests_correct_and_notifications_catch_up(
    without_shared_operator: None, people: People, control_plane: ControlPlane, tmp_path: Path
) -> None:
    ns = people.namespace
    orchestrator = Requests(control_plane, ns, people.orchestrator)
    alice = Requests(control_plane, ns, people.alice)
    names = [f"outage-{i}" for i in range(4)]
    async with FakeSlack() as slack:
        operator = slack_operator(control_plane, tmp_path / "operator", slack)
        await asyncio.to_thread(operator.start)
        try:
            slack.outage = True
            outage_began = time.monotonic()
            for name in names:
                await asyncio.to_thread(orchestrator.create, manifest(name))

            def unavailable(obj: dict[str, Any]) -> bool:
                notified = condition(obj, "Notified")
                return phase(obj) == "Pending" and (
                    notified.get("status"),
                    notified.get("reason"),
                ) == ("False", "NotifierUnavailable")

            down = await asyncio.to_thread(orchestrator.wait, names, unavailable, within=60)
            assert "slack" in condition(down[names[0]], "Notified")["message"]

            # Deciding does not need Slack.
            await asyncio.to_thread(
                alice.annotate, names[0], {"greenlight.dev/decision": "approve"}
            )
            decided = await asyncio.to_thread(
                orchestrator.wait, names[:1], lambda o: phase(o) == "Approved", within=30
            )
            assert decided[names[0]]["status"]["decision"]["by"] == people.alice

            await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_began)))
            slack.outage = False
            recovered_at = time.monotonic()

            def caught_up(obj: dict[str, Any]) -> bool:
                entries = (obj.get("status") or {}).get("notifications") or []
                return (
                    phase(obj) == "Pending"
                    and len(entries) == 1
                    and bool(entries[0].get("ref"))
                    and condition(obj, "Notified").get("status") == "True"
                )

            pending = await asyncio.to_thread(orchestrator.wait, names[1:], caught_up, within=60)
            catch_up = time.monotonic() - recovered_at
        finally:
            await asyncio.to_thread(operator.stop)

    assert catch_up < 40, f"notifications took {catch_up:.0f} s to catch up"
    for name in names[1:]:
        uid = pending[name]["metadata"]["uid"]
        assert len(posts_for(slack, uid)) == 1, f"{name} was not posted exactly once"
        entry = pending[name]["status"]["notifications"][0]
        assert (entry["channel"], entry["state"]) == (CHANNEL, "sent")
