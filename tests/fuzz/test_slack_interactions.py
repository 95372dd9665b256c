"""Generated Slack interaction requests against the operator's HTTP interactions endpoint.

Bodies, signatures, timestamps and button tokens are random, forged, or correctly signed around
random content (including genuine tokens clicked by people Greenlight cannot identify). The
endpoint answers 2xx or 4xx, never 5xx; the operator stays up; no request is ever decided.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET
from tests.resilience.cluster import Requests, manifest, phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.adapters.slack.blocks import APPROVE_ACTION_ID, DENY_ACTION_ID
from greenlight.adapters.slack.interactions import INTERACTIONS_PATH
from greenlight.adapters.slack.tokens import TokenCodec
from greenlight.core.model import Action
from greenlight.devcluster import ControlPlane
from greenlight.devcluster.controlplane import free_port


@pytest.fixture
def slack_operator(
    without_shared_operator: None, control_plane: ControlPlane, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, str]]:
    """An operator with Slack in HTTP mode; the Web API itself is unreachable, so identities
    can never be looked up and every click must end refused, whatever it carries."""
    port = free_port()
    process = OperatorProcess(
        control_plane,
        tmp_path / "operator",
        env={
            "GREENLIGHT_SLACK_BOT_TOKEN": BOT_TOKEN,
            "GREENLIGHT_SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "GREENLIGHT_SLACK_API_URL": f"http://127.0.0.1:{free_port()}/api/",
            "GREENLIGHT_SLACK_DEFAULT_CHANNEL": "C0FUZZ0001",
            "GREENLIGHT_SLACK_MODE": "http",
            "GREENLIGHT_SLACK_INTERACTIONS_PORT": str(port),
        },
    )
    process.start()
    yield process, f"http://127.0.0.1:{port}{INTERACTIONS_PATH}"
    process.stop()


def sign(body: bytes, timestamp: str, secret: str = SIGNING_SECRET) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def payloads(draw: st.DrawFn, uid: str) -> dict[str, Any]:
    """block_actions / view_submission shapes with random or genuine-but-useless content."""
    codec = TokenCodec(SIGNING_SECRET)
    token = draw(
        st.one_of(
            st.just(codec.mint(uid, Action.APPROVE)),
            st.just(codec.mint(uid, Action.DENY)),
            st.text(max_size=80),
            st.just(codec.mint(uid, Action.APPROVE)[:-3] + "AAA"),
        )
    )
    kind = draw(st.sampled_from(["block_actions", "view_submission", "shortcut", "", "x"]))
    user = draw(st.one_of(st.just({"id": "U0NOBODY01"}), JSONISH))
    if kind == "block_actions":
        return {
            "type": kind,
            "user": user,
            "trigger_id": draw(st.text(max_size=20)),
            "channel": draw(st.one_of(st.just({"id": "C0FUZZ0001"}), JSONISH)),
            "container": draw(JSONISH),
            "actions": [
                {
                    "action_id": draw(
                        st.sampled_from([APPROVE_ACTION_ID, DENY_ACTION_ID, "other"])
                    ),
                    "value": token,
                }
            ],
        }
    if kind == "view_submission":
        return {
            "type": kind,
            "user": user,
            "view": {
                "callback_id": draw(st.sampled_from(["greenlight_deny", "other", ""])),
                "private_metadata": draw(st.one_of(st.text(max_size=60), st.just(token))),
                "state": {"values": draw(JSONISH)},
            },
        }
    return {"type": kind, "user": user, "extra": draw(JSONISH)}


@st.composite
def requests_for(draw: st.DrawFn, uid: str) -> tuple[bytes, dict[str, str]]:
    """A body and headers: well signed, forged, stale, unsigned or plain garbage."""
    how = draw(st.sampled_from(["signed", "forged", "stale", "unsigned", "garbage", "nojson"]))
    now = str(int(time.time()))
    if how == "garbage":
        body = draw(st.binary(max_size=300))
    elif how == "nojson":
        body = urlencode({"payload": draw(st.text(max_size=50))}).encode()
    else:
        body = urlencode({"payload": json.dumps(draw(payloads(uid)))}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if how in ("signed", "nojson", "garbage"):
        headers |= {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": sign(body, now)}
    elif how == "forged":
        secret = draw(st.text(min_size=1, max_size=20))
        headers |= {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": sign(body, now, secret)}
    elif how == "stale":
        old = str(int(time.time()) - draw(st.integers(301, 10**6)))
        headers |= {"X-Slack-Request-Timestamp": old, "X-Slack-Signature": sign(body, old)}
    return body, headers


def test_random_and_forged_interactions_never_fail_the_server_or_decide(
    slack_operator: tuple[OperatorProcess, str], people: People, control_plane: ControlPlane
) -> None:
    process, url = slack_operator
    requests = Requests(control_plane, people.namespace, people.orchestrator)
    requests.create(manifest("fuzzed"))
    uid = requests.wait(["fuzzed"], lambda o: phase(o) == "Pending", within=30)["fuzzed"][
        "metadata"
    ]["uid"]
    statuses: list[int] = []

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(requests_for(uid))
    def exchange(case: tuple[bytes, dict[str, str]]) -> None:
        body, headers = case
        status = post(url, body, headers)
        statuses.append(status)
        assert 200 <= status < 500, (status, body[:200], headers)

    exchange()
    time.sleep(2)  # clicks are handled after the acknowledgement
    assert process.running, process.tail()
    assert any(s == 200 for s in statuses), "no generated request was ever accepted as authentic"
    assert any(s == 401 for s in statuses), "no forged request was generated"
    obj = requests.get("fuzzed")
    assert phase(obj) == "Pending", obj["status"]
    annotations = obj["metadata"].get("annotations") or {}
    assert not any(k.startswith("decisions.greenlight.dev/") for k in annotations), annotations
    errors = [r for r in process.log_records() if r.get("level") == "ERROR"]
    assert not [e for e in errors if "Traceback" in json.dumps(e)], errors[:3]
