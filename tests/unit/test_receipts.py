"""Signed approval receipts: the DSSE envelope and its PAE, the in-toto statement, issuing on
Approved only, and every way `verify` refuses one."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.support.marks import KEY, signed, stamp

from greenlight import cli
from greenlight.adapters.receiptkeys import load_or_create_signer
from greenlight.client import ApprovalClient
from greenlight.core import lifecycle, receipts
from greenlight.core.dsse import (
    Envelope,
    Signature,
    Signer,
    key_id,
    pae,
    parse_public_keys,
    public_pem,
)
from greenlight.core.durations import parse_valid_for
from greenlight.core.model import ANN_REQUESTED_BY, Action, Phase, Via
from greenlight.core.receipts import Outcome
from greenlight.core.request import Request, Status
from greenlight.core.stamps import DecisionRecord

CREATED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
DECIDED = CREATED + timedelta(minutes=1)
PLAN = "- aws:s3:Bucket logs\n"
REQUESTER = "system:serviceaccount:ci:orchestrator"


def obj(*actions: tuple[str, Action], valid_for: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "action": "pulumi destroy",
        "target": "production",
        "requester": {"workflowId": "wf-1", "taskId": "task-9", "onBehalfOf": "dave"},
        "plan": {"summary": "-1", "details": PLAN},
        "timeout": "30m",
        "policy": {"requiredApprovals": len(actions) or 1},
    }
    if valid_for is not None:
        spec["validFor"] = valid_for
    body: dict[str, Any] = {
        "metadata": {
            "namespace": "ci",
            "name": "destroy-prod",
            "uid": "uid-1",
            "creationTimestamp": "2026-03-01T12:00:00Z",
            "annotations": {},
        },
        "spec": spec,
    }
    annotations = body["metadata"]["annotations"]
    for offset, (user, action) in enumerate(actions):
        record = DecisionRecord(
            user,
            action,
            DECIDED + timedelta(seconds=offset),
            Via.KUBECTL,
            "plan reviewed" if action is Action.APPROVE else "not now",
        )
        annotations.update([signed(record, "uid-1")])
    annotations[ANN_REQUESTED_BY] = stamp(body, REQUESTER)
    return body


def decide(body: dict[str, Any], signer: Signer) -> tuple[Request, lifecycle.Transition]:
    request = Request.parse(body, KEY)
    at = DECIDED + timedelta(seconds=5)
    return request, receipts.issue(request, lifecycle.reconcile(request, at), signer)


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture
def receipt(signer: Signer) -> Envelope:
    _, transition = decide(obj(("alice", Action.APPROVE)), signer)
    assert transition.status.receipt is not None
    return transition.status.receipt


def keys(*signers: Signer) -> dict[str, Ed25519PublicKey]:
    return {s.key_id: s.private_key.public_key() for s in signers}


def check(
    envelope: object,
    public_keys: dict[str, Ed25519PublicKey],
    *,
    plan: bytes = PLAN.encode(),
    action: str = "pulumi destroy",
    target: str = "production",
    now: datetime = DECIDED + timedelta(minutes=5),
) -> receipts.Verification:
    return receipts.verify(envelope, public_keys, plan=plan, action=action, target=target, now=now)


def statement_of(envelope: Envelope) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(envelope.payload)
    return data


# -- PAE and the envelope -------------------------------------------------------------------


def test_pae_matches_the_dsse_specification_example() -> None:
    # DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters_and_keeps_empty_fields() -> None:
    assert pae("", b"") == b"DSSEv1 0  0 "
    assert pae("t\u00e9", "\u00e9".encode()) == b"DSSEv1 3 t\xc3\xa9 2 \xc3\xa9"
    assert pae(receipts.PAYLOAD_TYPE, b"{}") == b"DSSEv1 28 application/vnd.in-toto+json 2 {}"


def test_the_signature_covers_the_pae_of_type_and_payload(signer: Signer) -> None:
    envelope = signer.sign("text/plain", b"hello")
    public_key = signer.private_key.public_key()

    public_key.verify(envelope.signatures[0].sig, b"DSSEv1 10 text/plain 5 hello")
    assert envelope.signatures[0].keyid == signer.key_id


def test_key_id_is_the_sha256_of_the_raw_public_key(signer: Signer) -> None:
    raw = signer.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    assert signer.key_id == hashlib.sha256(raw).hexdigest()
    assert key_id(signer.private_key.public_key()) == signer.key_id


def test_envelope_json_has_the_dsse_fields_and_round_trips(receipt: Envelope) -> None:
    data = receipt.to_json()

    assert sorted(data) == ["payload", "payloadType", "signatures"]
    assert data["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(data["payload"]) == receipt.payload
    assert sorted(data["signatures"][0]) == ["keyid", "sig"]
    assert Envelope.from_json(json.loads(json.dumps(data))) == receipt


# -- the statement and issuing ----------------------------------------------------------------


def test_the_statement_names_the_plan_the_request_and_the_approvers(receipt: Envelope) -> None:
    data = statement_of(receipt)

    assert data["_type"] == "https://in-toto.io/Statement/v1"
    assert data["predicateType"] == "https://greenlight.dev/approval/v1"
    assert data["subject"] == [
        {"name": "plan", "digest": {"sha256": hashlib.sha256(PLAN.encode()).hexdigest()}}
    ]
    assert data["predicate"] == {
        "namespace": "ci",
        "name": "destroy-prod",
        "uid": "uid-1",
        "action": "pulumi destroy",
        "target": "production",
        "workflowId": "wf-1",
        "taskId": "task-9",
        "requester": REQUESTER,
        "onBehalfOf": "dave",
        "requiredApprovals": 1,
        "policies": [],
        "approvers": [{"user": "alice", "at": "2026-03-01T12:01:00Z", "via": "kubectl"}],
        "decidedAt": "2026-03-01T12:01:00Z",
        "notAfter": "2026-03-01T12:16:00Z",
    }


def test_valid_for_sets_not_after_from_the_decision_time(signer: Signer) -> None:
    _, transition = decide(obj(("alice", Action.APPROVE), valid_for="2h"), signer)
    assert transition.status.receipt is not None

    predicate = statement_of(transition.status.receipt)["predicate"]
    assert predicate["notAfter"] == "2026-03-01T14:01:00Z"


def test_a_quorum_receipt_lists_every_approver(signer: Signer) -> None:
    _, transition = decide(obj(("alice", Action.APPROVE), ("bob", Action.APPROVE)), signer)
    assert transition.status.receipt is not None

    predicate = statement_of(transition.status.receipt)["predicate"]
    assert [a["user"] for a in predicate["approvers"]] == ["alice", "bob"]
    assert predicate["decidedAt"] == "2026-03-01T12:01:01Z"


def test_issuing_adds_the_receipt_and_its_audit_entry_in_the_same_transition(
    signer: Signer,
) -> None:
    _, transition = decide(obj(("alice", Action.APPROVE)), signer)
    assert transition.status.phase is Phase.APPROVED
    assert transition.status.receipt is not None

    entry = transition.audit[-1]
    assert entry.event == "receipt_issued"
    assert entry.event_id == "uid-1:receipt"
    assert entry.details == {"digest": transition.status.receipt.digest, "keyid": signer.key_id}
    assert transition.status.receipt.digest.startswith("sha256:")


@pytest.mark.parametrize(
    "actions",
    [(("alice", Action.DENY),), (("alice", Action.CANCEL),), ()],
    ids=["denied", "cancelled", "pending"],
)
def test_no_receipt_unless_approved(
    signer: Signer, actions: tuple[tuple[str, Action], ...]
) -> None:
    _, transition = decide(obj(*actions), signer)

    assert transition.status.receipt is None
    assert "receipt_issued" not in [e.event for e in transition.audit]


def test_a_request_approved_before_receipts_existed_is_not_given_one(signer: Signer) -> None:
    body = obj(("alice", Action.APPROVE))
    _, approved = decide(body, Signer(Ed25519PrivateKey.generate()))
    body["status"] = {k: v for k, v in approved.status.to_json().items() if k != "receipt"}

    request, later = decide(body, signer)
    assert later.status.receipt is None
    assert not later.changes(request.status)


def test_an_expired_request_has_no_receipt(signer: Signer) -> None:
    request = Request.parse(obj(), KEY)
    transition = receipts.issue(
        request, lifecycle.reconcile(request, CREATED + timedelta(hours=1)), signer
    )

    assert transition.status.phase is Phase.EXPIRED
    assert transition.status.receipt is None


def test_issuing_again_is_a_no_op_and_the_receipt_survives_the_status_round_trip(
    signer: Signer,
) -> None:
    body = obj(("alice", Action.APPROVE))
    _, first = decide(body, signer)
    _, again = decide(body, signer)
    assert first.status.receipt == again.status.receipt  # Ed25519 is deterministic

    body["status"] = json.loads(json.dumps(first.status.to_json()))
    assert Status.from_json(body["status"]) == first.status
    request, later = decide(body, signer)
    assert not later.changes(request.status)
    assert "receipt_issued" not in [e.event for e in later.audit]


# -- verify ---------------------------------------------------------------------------------


def test_a_receipt_verifies_for_its_plan_action_and_target(
    receipt: Envelope, signer: Signer
) -> None:
    result = check(receipt.to_json(), keys(signer))

    assert result.ok, result.reason
    assert result.outcome is Outcome.VALID
    assert "approved by alice" in result.reason


def test_a_plan_changed_by_one_byte_is_refused(receipt: Envelope, signer: Signer) -> None:
    plan = bytearray(PLAN.encode())
    plan[2] ^= 0x01

    assert check(receipt, keys(signer), plan=bytes(plan)).outcome is Outcome.PLAN_MISMATCH
    assert check(receipt, keys(signer), plan=PLAN.encode() + b"\n").outcome is (
        Outcome.PLAN_MISMATCH
    )


@pytest.mark.parametrize(
    ("action", "target"),
    [("pulumi up", "production"), ("pulumi destroy", "staging"), ("pulumi destroy ", "production")],
)
def test_another_action_or_target_is_refused(
    receipt: Envelope, signer: Signer, action: str, target: str
) -> None:
    result = check(receipt, keys(signer), action=action, target=target)

    assert result.outcome is Outcome.ACTION_MISMATCH


@pytest.mark.parametrize(
    "expected",
    [{"namespace": "approvals-staging"}, {"name": "destroy-prod-2"}, {"uid": "uid-2"}],
)
def test_a_receipt_for_a_request_elsewhere_is_refused_when_the_site_names_where(
    receipt: Envelope, signer: Signer, expected: dict[str, str]
) -> None:
    """Whose approvers said yes is the namespace's: a production site names the namespace whose
    approvers it trusts, and a receipt from another (same action and target) does not do."""
    result = receipts.verify(
        receipt, keys(signer), plan=PLAN.encode(), action="pulumi destroy", target="production",
        now=DECIDED + timedelta(minutes=5), **expected,
    )  # fmt: skip

    assert result.outcome is Outcome.ACTION_MISMATCH
    ((field, wanted),) = expected.items()
    assert result.reason.startswith(f"approved {field} is ")
    assert result.reason.endswith(f"not {wanted!r}")
    assert receipts.verify(
        receipt, keys(signer), plan=PLAN.encode(), action="pulumi destroy", target="production",
        now=DECIDED + timedelta(minutes=5), namespace="ci", name="destroy-prod", uid="uid-1",
    ).ok  # fmt: skip


def test_a_receipt_is_refused_from_not_after_on(receipt: Envelope, signer: Signer) -> None:
    not_after = DECIDED + timedelta(minutes=15)

    assert check(receipt, keys(signer), now=not_after - timedelta(seconds=1)).ok
    assert check(receipt, keys(signer), now=not_after).outcome is Outcome.EXPIRED
    assert check(receipt, keys(signer), now=not_after + timedelta(days=7)).outcome is (
        Outcome.EXPIRED
    )


def test_a_receipt_signed_by_a_key_that_is_not_published_is_refused(receipt: Envelope) -> None:
    other = Signer(Ed25519PrivateKey.generate())

    assert check(receipt, keys(other)).outcome is Outcome.UNKNOWN_KEY
    assert check(receipt, {}).outcome is Outcome.UNKNOWN_KEY


def test_an_edited_payload_is_refused(receipt: Envelope, signer: Signer) -> None:
    data = statement_of(receipt)
    data["predicate"]["target"] = "staging"
    data["predicate"]["notAfter"] = "2099-01-01T00:00:00Z"
    edited = Envelope(receipt.payload_type, receipts.serialize(data), receipt.signatures)

    result = check(edited, keys(signer), target="staging")
    assert result.outcome is Outcome.BAD_SIGNATURE
    assert result.predicate is None  # nothing of an unsigned payload is reported


def test_a_payload_re_signed_by_an_unpublished_key_is_refused(
    receipt: Envelope, signer: Signer
) -> None:
    forger = Signer(Ed25519PrivateKey.generate())
    data = statement_of(receipt)
    data["subject"][0]["digest"]["sha256"] = hashlib.sha256(b"rm -rf /").hexdigest()
    forged = forger.sign(receipt.payload_type, receipts.serialize(data))
    claiming = Envelope(
        forged.payload_type, forged.payload, (Signature(signer.key_id, forged.signatures[0].sig),)
    )

    assert check(forged, keys(signer), plan=b"rm -rf /").outcome is Outcome.UNKNOWN_KEY
    assert check(claiming, keys(signer), plan=b"rm -rf /").outcome is Outcome.BAD_SIGNATURE


def test_another_payload_type_is_refused(receipt: Envelope, signer: Signer) -> None:
    retyped = Envelope("application/json", receipt.payload, receipt.signatures)

    assert check(retyped, keys(signer)).outcome is Outcome.MALFORMED


@pytest.mark.parametrize(
    "envelope",
    [
        "not an object",
        {},
        {"payloadType": receipts.PAYLOAD_TYPE, "payload": "e30=", "signatures": []},
        {"payloadType": receipts.PAYLOAD_TYPE, "payload": "%%%", "signatures": [{"sig": "AA=="}]},
        {"payloadType": receipts.PAYLOAD_TYPE, "payload": "e30=", "signatures": [{"keyid": "k"}]},
    ],
    ids=["string", "empty", "no-signatures", "payload-not-base64", "no-sig"],
)
def test_a_malformed_envelope_is_refused(envelope: object, signer: Signer) -> None:
    assert check(envelope, keys(signer)).outcome is Outcome.MALFORMED


def test_a_signed_payload_that_is_no_greenlight_statement_is_malformed(signer: Signer) -> None:
    envelope = signer.sign(receipts.PAYLOAD_TYPE, b'{"_type": "https://in-toto.io/Statement/v1"}')

    result = check(envelope, keys(signer))
    assert result.outcome is Outcome.MALFORMED
    assert "predicateType" in result.reason


def test_after_a_key_rotation_old_and_new_receipts_verify(signer: Signer) -> None:
    old = decide(obj(("alice", Action.APPROVE)), signer)[1].status.receipt
    rotated = Signer(Ed25519PrivateKey.generate())
    new = decide(obj(("bob", Action.APPROVE)), rotated)[1].status.receipt
    published = parse_public_keys(
        public_pem(rotated.private_key.public_key()) + public_pem(signer.private_key.public_key())
    )

    assert set(published) == {signer.key_id, rotated.key_id}
    assert check(old, published).ok
    assert check(new, published).ok
    assert check(old, keys(rotated)).outcome is Outcome.UNKNOWN_KEY  # the old key was dropped


# -- keys and durations ------------------------------------------------------------------------


def test_published_keys_must_be_ed25519_pem() -> None:
    ec = generate_private_key(SECP256R1()).public_key()
    pem = ec.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()

    with pytest.raises(ValueError, match="Ed25519"):
        parse_public_keys(pem)
    with pytest.raises(ValueError, match="no PEM public key"):
        parse_public_keys("keyid abc\n")


def test_the_receipt_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "receipt.key"

    first = load_or_create_signer(path)
    again = load_or_create_signer(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.key_id == again.key_id
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_a_receipt_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "receipt.key"
    path.write_text("not a key")

    with pytest.raises(ValueError, match=str(path)):
        load_or_create_signer(path)


@pytest.mark.parametrize(
    ("text", "minutes"), [("1m", 1), ("15m", 15), ("1h30m", 90), ("24h", 1440), ("90s", 1.5)]
)
def test_valid_for_accepts_1m_to_24h(text: str, minutes: float) -> None:
    assert parse_valid_for(text) == timedelta(minutes=minutes)


@pytest.mark.parametrize("text", ["", "59s", "24h1s", "25h", "1d", "15", "15 m"])
def test_valid_for_refuses_other_values(text: str) -> None:
    with pytest.raises(ValueError, match="validFor"):
        parse_valid_for(text)


# -- `greenlight verify` and `greenlight receipt keys`, offline ------------------------------------


@pytest.fixture
def files(tmp_path: Path, receipt: Envelope, signer: Signer) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("receipt.json", "plan.txt", "keys.pem")}
    paths["receipt.json"].write_text(json.dumps({"name": "x", "receipt": receipt.to_json()}))
    paths["plan.txt"].write_bytes(PLAN.encode())
    paths["keys.pem"].write_text(public_pem(signer.private_key.public_key()))
    return paths


def run_verify(
    files: dict[str, Path], *extra: str, action: str = "pulumi destroy", target: str = "production"
) -> int:
    argv = ["verify", "--receipt", str(files["receipt.json"]), "--plan-file"]
    argv += [str(files["plan.txt"]), "--action", action, "--target", target]
    return cli.main([*argv, "--keys", str(files["keys.pem"]), *extra])


def test_verify_exits_0_with_one_line_on_stdout(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("greenlight.core.timefmt.now", lambda: DECIDED + timedelta(minutes=1))

    assert run_verify(files) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert ": VALID: ci/destroy-prod approved by alice" in out


def test_verify_exit_codes_name_each_failure(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    moment = [DECIDED + timedelta(minutes=1)]
    monkeypatch.setattr("greenlight.core.timefmt.now", lambda: moment[0])
    assert run_verify(files, action="pulumi up") == 6
    assert run_verify(files, target="staging") == 6
    assert run_verify(files, "-n", "ci") == 0  # the namespace it was approved in
    assert run_verify(files, "-n", "approvals-staging") == 6
    files["plan.txt"].write_bytes(PLAN.encode() + b" ")
    assert run_verify(files) == 5
    files["plan.txt"].write_bytes(PLAN.encode())
    moment[0] = DECIDED + timedelta(minutes=15)
    assert run_verify(files) == 7
    moment[0] = DECIDED
    files["keys.pem"].write_text(public_pem(Ed25519PrivateKey.generate().public_key()))
    assert run_verify(files) == 3
    files["receipt.json"].write_text('{"payloadType": 1}')
    assert run_verify(files) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "ACTION MISMATCH",
        "ACTION MISMATCH",
        "ACTION MISMATCH",
        "PLAN MISMATCH",
        "EXPIRED",
        "UNKNOWN KEY",
        "MALFORMED",
    ]
    assert cli.VERIFY_EXIT_CODES[Outcome.BAD_SIGNATURE] == 4
    assert len(set(cli.VERIFY_EXIT_CODES.values())) == len(Outcome)


def test_receipt_keys_prints_a_keys_file_from_the_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = load_or_create_signer(tmp_path / "receipt.key")

    assert cli.main(["receipt", "keys", "--key-file", str(tmp_path / "receipt.key")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"keyid {signer.key_id}\n-----BEGIN PUBLIC KEY-----")
    assert set(parse_public_keys(out)) == {signer.key_id}


def test_the_sdk_sets_valid_for_and_refuses_a_bad_one_before_sending() -> None:
    client = ApprovalClient("ci", api_client=kubernetes.client.ApiClient())
    fields: dict[str, Any] = {"action": "a", "target": "t", "workflow_id": "wf-1"}

    assert client.manifest(**fields, valid_for="1h")["spec"]["validFor"] == "1h"
    assert "validFor" not in client.manifest(**fields)["spec"]
    with pytest.raises(ValueError, match="between 1m and 24h"):
        client.manifest(**fields, valid_for="25h")


def test_request_refuses_a_bad_valid_for_before_contacting_a_cluster(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["request", "--action", "a", "--target", "t", "--workflow-id", "w"]

    assert cli.main([*argv, "--valid-for", "2d"]) == 1
    assert "validFor '2d'" in capsys.readouterr().err


def test_the_receipt_names_the_effective_required_approvals_not_the_specs(
    signer: Signer,
) -> None:
    from dataclasses import replace

    from greenlight.core.policies import EffectivePolicy

    request, transition = decide(obj(("alice", Action.APPROVE)), signer)
    assert request.spec.required_approvals == 1
    stricter = replace(
        request, marks=replace(request.marks, policy=EffectivePolicy(required_approvals=2))
    )

    predicate = receipts.statement(stricter, transition.status)["predicate"]

    assert predicate["requiredApprovals"] == 2
    assert receipts.statement(request, transition.status)["predicate"]["requiredApprovals"] == 1
