"""The operator's real audit log: it verifies, every tampering is caught by `greenlight audit
verify`, it is mirrored to stdout, and a decision never takes effect without its audit record."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support import tampering
from tests.support.auditfiles import snapshot
from tests.support.identities import GreenlightCli, cli_for
from tests.support.kubectl import Kubectl
from tests.support.manifests import annotate, approval_request, create, get, poll, wait_phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.adapters.auditlog import head_path
from greenlight.devcluster import ControlPlane


@pytest.fixture(scope="module")
def cli(control_plane: ControlPlane) -> GreenlightCli:
    return cli_for(control_plane)


def decide_one(kubectl: Kubectl, people: People, name: str) -> str:
    """A request through its whole life (requested, notified, attempts, decided); its uid."""
    ns = people.namespace
    create(kubectl, approval_request(name, ns), people.orchestrator)
    uid = str(wait_phase(kubectl, ns, name, "Pending")["metadata"]["uid"])
    annotate(kubectl, ns, name, "greenlight.dev/decision=approve", as_user="mallory")
    assert annotate(
        kubectl, ns, name, "greenlight.dev/decision=deny", "greenlight.dev/reason=no",
        as_user="bob",
    ).returncode == 0  # fmt: skip
    wait_phase(kubectl, ns, name, "Denied")
    return uid


@pytest.fixture
def audit_copy(operator: OperatorProcess, people: People, kubectl: Kubectl, tmp_path: Path) -> Path:
    """A consistent copy of the operator's live log, after at least one full lifecycle."""
    decide_one(kubectl, people, "copied")
    return snapshot(operator.audit_file, tmp_path / "copy")


def test_operator_audit_log_verifies_with_its_key(
    operator: OperatorProcess, cli: GreenlightCli, audit_copy: Path
) -> None:
    records = len(audit_copy.read_text().splitlines())

    done = cli("audit", "verify", str(audit_copy), "--key-file", str(operator.audit_key_file))

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{audit_copy}: OK, {records} records, chain intact"


def test_every_event_of_a_request_is_recorded_with_identity_and_request(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    uid = decide_one(kubectl, people, "events")
    kubectl("-n", people.namespace, "delete", "apr/events")

    def of_request() -> list[dict[str, Any]]:
        return [r for r in operator.audit_records() if (r["request"] or {}).get("uid") == uid]

    records = poll(
        lambda: [r for r in of_request() if r["event"] == "deleted"] and of_request(), timeout=10
    )
    assert [(r["event"], r["actor"], r["outcome"], r["reason"]) for r in records] == [
        ("requested", people.orchestrator, "accepted", ""),
        ("notified", "greenlight", "sent", ""),
        ("decision_attempted", "mallory", "refused", "not_authorized"),
        ("decision_attempted", "bob", "allowed", ""),
        ("decided", "bob", "Denied", "no"),
        ("deleted", "greenlight-admin", "deleted", ""),
    ]
    digest = records[0]["details"]["planDigest"]
    for record in records:
        assert record["request"]["namespace"] == people.namespace
        assert record["request"]["name"] == "events"
        assert record["request"]["planDigest"] == digest
        assert record["time"].endswith("Z")
    # The full request, plan included, is on record once: in `requested`.
    assert records[0]["details"]["spec"]["action"] == "pulumi destroy"
    assert records[0]["details"]["spec"]["plan"]["details"] == "- aws:s3:Bucket logs\n"
    assert all("spec" not in r["details"] and "spec" not in r["request"] for r in records[1:])
    assert records[2]["details"]["message"].startswith("user 'mallory' may not approve")


def test_audit_records_are_mirrored_to_the_json_log(
    operator: OperatorProcess, people: People, kubectl: Kubectl
) -> None:
    uid = decide_one(kubectl, people, "mirrored")
    in_file = [r for r in operator.audit_records() if (r["request"] or {}).get("uid") == uid]

    def in_log() -> list[dict[str, object]]:
        return [
            r["audit"]
            for r in operator.log_records()
            if "audit" in r and (r["audit"].get("request") or {}).get("uid") == uid
        ]

    assert poll(lambda: in_log() == in_file, timeout=5)


def lines_of(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return handle.readlines()


TAMPERING = {
    "edit": tampering.edit(1),
    "delete": tampering.delete(1),
    "reorder": tampering.reorder(1),
    "truncate-mid-line": tampering.truncate_mid_line,
    "truncate-at-record-boundary": tampering.truncate_at_boundary,
    "append-forged": tampering.append_forged,
    "rewrite-tail": tampering.rewrite_tail,
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_copy_fails_verification_naming_the_first_bad_line(
    operator: OperatorProcess, cli: GreenlightCli, audit_copy: Path, case: str
) -> None:
    lines, bad_line = TAMPERING[case](lines_of(audit_copy))
    audit_copy.write_text("".join(lines), encoding="utf-8")

    done = cli("audit", "verify", str(audit_copy), "--key-file", str(operator.audit_key_file))

    assert done.returncode == 1
    assert done.stderr.startswith(f"{audit_copy}: TAMPERED: ")
    if case == "truncate-at-record-boundary":
        named = f"log ends at record {bad_line - 1} but the head file records {bad_line}"
    else:
        named = f"line {bad_line}: "
    assert named in done.stderr, done.stderr


def test_verify_with_the_wrong_key_fails_at_the_first_line(
    cli: GreenlightCli, audit_copy: Path, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text("0" * 64)

    done = cli("audit", "verify", str(audit_copy), "--key-file", str(wrong))

    assert done.returncode == 1
    assert "line 1: MAC does not match the audit key (forged record)" in done.stderr


def test_verify_uses_an_explicit_head_file(
    cli: GreenlightCli, audit_copy: Path, tmp_path: Path
) -> None:
    kept = tmp_path / "kept.head"
    shutil.copyfile(head_path(audit_copy), kept)
    head_path(audit_copy).unlink()
    lines, _ = tampering.truncate_at_boundary(lines_of(audit_copy))
    audit_copy.write_text("".join(lines))

    without_head = cli("audit", "verify", str(audit_copy))
    with_head = cli("audit", "verify", str(audit_copy), "--head", str(kept))

    assert without_head.returncode == 2, "with neither head nor anchor the log is unanchored"
    assert f"{audit_copy}: UNANCHORED: " in without_head.stderr
    assert with_head.returncode == 1
    assert "the log was truncated" in with_head.stderr


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """The audit file replaced by a directory (every append fails with EISDIR), then restored."""
    saved = path.with_name(path.name + ".saved")
    path.rename(saved)
    path.mkdir()
    try:
        yield
    finally:
        path.rmdir()
        saved.rename(path)


def test_decision_does_not_take_effect_while_the_audit_log_cannot_be_written(
    operator: OperatorProcess,
    people: People,
    kubectl: Kubectl,
    cli: GreenlightCli,
    tmp_path: Path,
) -> None:
    """The operator fails closed. An allowed decision is audited when the operator sees its
    record on the object; while the log cannot be written the transition is held back: the
    phase stays Pending, condition Audited=False and the failure metric say why, and once the
    log is writable again the decision completes, chain intact."""
    ns = people.namespace
    create(kubectl, approval_request("held", ns), people.orchestrator)
    wait_phase(kubectl, ns, "held", "Pending")
    poll(lambda: get(kubectl, ns, "held")["status"]["notifications"], timeout=10)
    failures = operator.metric("greenlight_audit_write_failures_total")

    with unwritable(operator.audit_file):
        accepted = annotate(kubectl, ns, "held", "greenlight.dev/decision=approve", as_user="alice")
        assert accepted.returncode == 0, accepted.stderr
        held = poll(lambda: audited_false(kubectl, ns, "held"), timeout=15)
        assert held["status"]["phase"] == "Pending"
        assert "decision" not in held["status"]
        assert operator.metric("greenlight_audit_write_failures_total") >= failures + 1
        assert any(
            r.get("message") == "audit write failed; the transition is held back"
            and r["level"] == "ERROR"
            for r in operator.log_records()
        )

    obj = wait_phase(kubectl, ns, "held", "Approved", timeout=30)
    assert obj["status"]["decision"]["via"] == "kubectl"
    audited = {c["type"]: c for c in obj["status"]["conditions"]}["Audited"]
    assert audited["status"] == "True"
    copy = snapshot(operator.audit_file, tmp_path / "after")
    verified = cli("audit", "verify", str(copy), "--key-file", str(operator.audit_key_file))
    assert verified.returncode == 0, verified.stderr
    decided = [
        r
        for r in operator.audit_records()
        if r["event"] == "decided" and r["request"]["uid"] == obj["metadata"]["uid"]
    ]
    assert [(r["actor"], r["outcome"]) for r in decided] == [("alice", "Approved")]


def audited_false(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any] | None:
    obj = get(kubectl, ns, name)
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    audited = conditions.get("Audited", {})
    held = audited.get("status") == "False" and audited.get("reason") == "AuditWriteFailed"
    return obj if held else None
