"""Signed approval receipts from the real operator: written with the Approved transition, checked
offline by `greenlight verify`, and never present on a request that was not approved."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.support.identities import GreenlightCli, cli_for
from tests.support.kubectl import Kubectl
from tests.support.manifests import annotate, approval_request, create, wait_phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.adapters import receiptkeys
from greenlight.core import receipts
from greenlight.core.dsse import Signer, parse_public_keys
from greenlight.core.timefmt import format_time, now
from greenlight.devcluster import ControlPlane
from greenlight.kube import Credentials, Kube

PLAN = "- aws:s3:Bucket logs\n"


@pytest.fixture
def cli(control_plane: ControlPlane) -> GreenlightCli:
    return cli_for(control_plane)


def verify(
    cli: GreenlightCli, receipt: Path, plan: Path, keys: Path, *extra: str
) -> tuple[int, str]:
    done = cli(
        "verify",
        "--receipt",
        str(receipt),
        "--plan-file",
        str(plan),
        "--keys",
        str(keys),
        *extra,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def test_an_approved_request_carries_a_receipt_that_verifies_offline(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    cli: GreenlightCli,
    keys_file: Path,
    tmp_path: Path,
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("destroy", ns, validFor="10m"), people.orchestrator)
    wait_phase(kubectl, ns, "destroy", "Pending")
    done = annotate(kubectl, ns, "destroy", "greenlight.dev/decision=approve", as_user="alice")
    assert done.returncode == 0, done.stderr

    obj = wait_phase(kubectl, ns, "destroy", "Approved")
    receipt = obj["status"]["receipt"]
    assert receipt["payloadType"] == "application/vnd.in-toto+json"
    waited = cli("wait", "-n", ns, "destroy", "-o", "json", as_user=people.orchestrator)
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["receipt"] == receipt

    receipt_file, plan_file = tmp_path / "receipt.json", tmp_path / "plan.txt"
    receipt_file.write_text(waited.stdout)
    plan_file.write_text(PLAN)
    what = ("--action", "pulumi destroy", "--target", "production")
    code, line = verify(cli, receipt_file, plan_file, keys_file, *what)
    assert code == 0, line
    assert f"VALID: {ns}/destroy approved by alice" in line

    plan_file.write_text(PLAN.replace("logs", "logz"))
    assert verify(cli, receipt_file, plan_file, keys_file, *what)[0] == 5
    plan_file.write_text(PLAN)
    other = ("--action", "pulumi destroy", "--target", "staging")
    assert verify(cli, receipt_file, plan_file, keys_file, *other)[0] == 6

    records = [
        r
        for r in operator.audit_records()
        if (r.get("request") or {}).get("uid") == obj["metadata"]["uid"]
    ]
    issued = [r for r in records if r["event"] == "receipt_issued"]
    assert len(issued) == 1
    assert issued[0]["details"]["digest"].startswith("sha256:")
    assert [r["event"] for r in records].index("receipt_issued") > [
        r["event"] for r in records
    ].index("decided")


def test_a_denied_request_has_no_receipt(
    operator: OperatorProcess, people: People, kubectl: Kubectl, cli: GreenlightCli, tmp_path: Path
) -> None:
    ns = people.namespace
    create(kubectl, approval_request("denied", ns), people.orchestrator)
    wait_phase(kubectl, ns, "denied", "Pending")
    done = annotate(
        kubectl,
        ns,
        "denied",
        "greenlight.dev/decision=deny",
        "greenlight.dev/reason=not today",
        as_user="alice",
    )
    assert done.returncode == 0, done.stderr

    obj = wait_phase(kubectl, ns, "denied", "Denied")
    assert "receipt" not in obj["status"]
    plan_file = tmp_path / "plan.txt"
    plan_file.write_text(PLAN)
    keys = cli("receipt", "keys", "--key-file", str(operator.workdir / "receipt.key"))
    (tmp_path / "keys.pem").write_text(keys.stdout)
    checked = cli(
        "verify",
        "--request",
        "denied",
        "-n",
        ns,
        "--plan-file",
        str(plan_file),
        "--action",
        "pulumi destroy",
        "--target",
        "production",
        "--keys",
        str(tmp_path / "keys.pem"),
        as_user=people.orchestrator,
    )
    assert checked.returncode == 8, checked.stderr
    assert "NO RECEIPT: the request is Denied" in checked.stderr
    uid = obj["metadata"]["uid"]
    assert not [
        r
        for r in operator.audit_records()
        if (r.get("request") or {}).get("uid") == uid and "receipt" in r["event"]
    ]


def test_valid_for_outside_1m_to_24h_is_refused_by_the_api_server(
    people: People, kubectl: Kubectl
) -> None:
    for value, message in (("30s", "between 1m and 24h"), ("25h", "between 1m and 24h")):
        done = kubectl(
            "create",
            "-f",
            "-",
            input=json.dumps(approval_request("bad", people.namespace, validFor=value)),
            check=False,
        )
        assert done.returncode != 0
        assert message in done.stderr


async def publish(kube_client: Any, namespace: str, signer: Signer) -> None:
    kube = Kube(Credentials.of_client(kube_client))
    try:
        await receiptkeys.publish(kube, namespace, "receipt-keys", signer)
    finally:
        await kube.close()


def test_published_keys_keep_receipts_of_a_rotated_key_verifiable(
    kube_client: Any, namespace: str, cli: GreenlightCli, tmp_path: Path
) -> None:
    old, new = Signer(Ed25519PrivateKey.generate()), Signer(Ed25519PrivateKey.generate())
    for signer in (old, new, new):  # a restart publishes the same key again
        asyncio.run(publish(kube_client, namespace, signer))
    where = f"{namespace}/receipt-keys"

    printed = cli("receipt", "keys", "--keys-configmap", where)
    assert printed.returncode == 0, printed.stderr
    assert set(parse_public_keys(printed.stdout)) == {old.key_id, new.key_id}

    statement = {
        "_type": receipts.STATEMENT_TYPE,
        "subject": [{"name": "plan", "digest": {"sha256": hashlib.sha256(b"plan").hexdigest()}}],
        "predicateType": receipts.PREDICATE_TYPE,
        "predicate": {
            "namespace": namespace,
            "name": "old",
            "action": "pulumi destroy",
            "target": "production",
            "approvers": [{"user": "alice"}],
            "notAfter": format_time(now() + timedelta(minutes=10)),
        },
    }
    receipt, plan = tmp_path / "receipt.json", tmp_path / "plan.txt"
    receipt.write_text(
        json.dumps(old.sign(receipts.PAYLOAD_TYPE, receipts.serialize(statement)).to_json())
    )
    plan.write_bytes(b"plan")
    what = ("--action", "pulumi destroy", "--target", "production")
    checked = cli(
        "verify",
        "--receipt",
        str(receipt),
        "--plan-file",
        str(plan),
        "--keys-configmap",
        where,
        *what,
    )
    assert checked.returncode == 0, checked.stderr
