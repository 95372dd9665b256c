"""The audit anchor against the real API server: a cut tail, an emptied or vanished log, or a
bad head is caught even with the head file gone, and the operator will not start a new chain
over a log that lost records until an admin resets it."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tests.resilience.cluster import without_shared_operator
from tests.support.identities import GreenlightCli, cli_for
from tests.support.kubectl import Kubectl
from tests.support.manifests import approval_request, create, get, poll, wait_phase
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.adapters import auditanchor, auditlog
from greenlight.adapters.auditlog import AuditLog, AuditWriteError, head_path
from greenlight.config import Settings
from greenlight.devcluster import ControlPlane, identity
from greenlight.kube import Credentials, Kube

__all__ = ["without_shared_operator"]

KEY = b"a" * 64
ANCHOR = "greenlight-audit-anchor"  # derived from audit.jsonl


@pytest.fixture(scope="module")
def cli(control_plane: ControlPlane) -> GreenlightCli:
    return cli_for(control_plane)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    path.write_bytes(KEY)
    return path


def anchored_seq(kube_client: Any, namespace: str, name: str = ANCHOR) -> int | None:
    try:
        data = client.CoreV1Api(kube_client).read_namespaced_config_map(name, namespace).data
    except client.exceptions.ApiException:
        return None
    return int((data or {})["seq"])


@pytest.fixture
async def anchored_log(tmp_path: Path, kube_client: Any, namespace: str) -> AsyncIterator[AuditLog]:
    """An audit log of 5 records whose anchor (in `namespace`) has caught up with it."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, key=KEY)
    settings = Settings(audit_file=path, audit_anchor_namespace=namespace)
    kube = Kube(Credentials.of_client(kube_client))
    task = await auditanchor.guard(log, kube, settings)
    assert task is not None
    for number in range(5):
        await log.record("decision_attempted", request=None, actor=f"u{number}", outcome="ok")
    for _ in range(100):
        if anchored_seq(kube_client, namespace) == 5:
            break
        await asyncio.sleep(0.1)
    assert anchored_seq(kube_client, namespace) == 5
    yield log
    task.cancel()
    log.close()
    await kube.close()


def verify(cli: GreenlightCli, path: Path, key_file: Path, *args: str) -> Any:
    return cli("audit", "verify", str(path), "--key-file", str(key_file), *args)


async def test_tail_cut_at_a_record_boundary_with_the_head_deleted_fails_by_the_anchor(
    anchored_log: AuditLog, cli: GreenlightCli, key_file: Path, namespace: str
) -> None:
    path = anchored_log.path
    lines = path.read_text().splitlines(keepends=True)
    anchor = f"{namespace}/{ANCHOR}"
    assert verify(cli, path, key_file, "--anchor", anchor).returncode == 0
    path.write_text("".join(lines[:4]))
    head_path(path).unlink()

    unanchored = verify(cli, path, key_file)
    done = verify(cli, path, key_file, "--anchor", anchor)

    assert unanchored.returncode == 2
    assert "UNANCHORED" in unanchored.stderr
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"{path}: TAMPERED: log ends at record 4 but the anchor records 5: "
        "the log was truncated (record 5 is the first one missing)"
    )


async def test_emptied_log_with_the_head_deleted_fails_by_the_anchor(
    anchored_log: AuditLog, cli: GreenlightCli, key_file: Path, namespace: str
) -> None:
    anchored_log.path.write_text("")
    head_path(anchored_log.path).unlink()

    done = verify(cli, anchored_log.path, key_file, "--anchor", f"{namespace}/{ANCHOR}")

    assert done.returncode == 1
    assert "(record 1 is the first one missing)" in done.stderr


async def test_deleted_anchor_is_reported_not_trusted(
    anchored_log: AuditLog, cli: GreenlightCli, key_file: Path, namespace: str, kube_client: Any
) -> None:
    client.CoreV1Api(kube_client).delete_namespaced_config_map(ANCHOR, namespace)

    done = verify(cli, anchored_log.path, key_file, "--anchor", f"{namespace}/{ANCHOR}")

    assert done.returncode == 1
    assert "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


async def test_empty_object_as_head_is_a_clear_error(
    anchored_log: AuditLog, cli: GreenlightCli, key_file: Path
) -> None:
    head_path(anchored_log.path).write_text("{}")

    done = verify(cli, anchored_log.path, key_file)

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"{anchored_log.path}: TAMPERED: {head_path(anchored_log.path)}: "
        "seq must be a whole number >= 0, not None"
    )


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
async def test_failed_head_write_leaves_no_duplicate_sequence_and_the_log_verifies(
    anchored_log: AuditLog,
    cli: GreenlightCli,
    key_file: Path,
    namespace: str,
    kube_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    real = auditlog.write_head
    failures = [OSError(code, os.strerror(code))]

    def fail_once(path: Path, head: Any) -> None:
        if failures:
            raise failures.pop()
        real(path, head)

    monkeypatch.setattr(auditlog, "write_head", fail_once)
    with pytest.raises(AuditWriteError):
        await anchored_log.record("decided", request=None, actor="alice", outcome="Approved")
    await anchored_log.record("decided", request=None, actor="alice", outcome="Approved")
    for _ in range(100):
        if anchored_seq(kube_client, namespace) == 6:
            break
        await asyncio.sleep(0.1)

    records = [json.loads(line) for line in anchored_log.path.read_text().splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert anchored_seq(kube_client, namespace) == 6
    done = verify(cli, anchored_log.path, key_file, "--anchor", f"{namespace}/{ANCHOR}")
    assert done.returncode == 0, done.stderr


def grant_anchor_access(kubectl: Kubectl, namespace: str) -> None:
    """What the chart grants the operator in its own namespace, here in the test's namespace."""
    account = f"{identity.NAMESPACE}:{identity.RELEASE}"
    kubectl("-n", namespace, "create", "role", "anchor", "--verb=get,create,patch",
            "--resource=configmaps")  # fmt: skip
    kubectl("-n", namespace, "create", "rolebinding", "anchor", "--role=anchor",
            f"--serviceaccount={account}")  # fmt: skip


def refusals_logged(operator: OperatorProcess, name: str) -> list[str]:
    """The errors the operator logged for request `name` (each failed attempt to record it)."""
    return [
        str(r["error"]) for r in operator.log_records() if r.get("name") == name and "error" in r
    ]


def test_operator_refuses_to_continue_a_log_truncated_while_it_was_stopped(
    without_shared_operator: None,
    control_plane: ControlPlane,
    kube_client: Any,
    kubectl: Kubectl,
    people: People,
    cli: GreenlightCli,
    tmp_path: Path,
) -> None:
    """Cut while stopped: on restart the metric says broken, nothing is recorded or decided;
    `greenlight audit reset` records the cut and re-anchors, and the next start continues."""
    ns = people.namespace
    grant_anchor_access(kubectl, ns)
    operator = OperatorProcess(
        control_plane, tmp_path / "op", env={"GREENLIGHT_AUDIT_ANCHOR_NAMESPACE": ns}
    )
    operator.start()
    try:
        assert operator.metric("greenlight_audit_chain_broken") == 0
        create(kubectl, approval_request("before", ns), people.orchestrator)
        # Fully handled (its records written, its status Pending) before the stop: otherwise the
        # next start would handle it again, and its `requested` would come first after the reset.
        wait_phase(kubectl, ns, "before", "Pending")
        poll(lambda: get(kubectl, ns, "before").get("status", {}).get("notifications"), 30)
        poll(lambda: anchored_seq(kube_client, ns) or None, timeout=45)
        operator.stop()
        anchored = anchored_seq(kube_client, ns)
        assert anchored is not None
        assert anchored >= 1
        operator.audit_file.write_text("")
        head_path(operator.audit_file).unlink()

        operator.start()
        poll(lambda: operator.metric("greenlight_audit_chain_broken") == 1, timeout=30)
        create(kubectl, approval_request("after", ns), people.orchestrator)
        refused = poll(lambda: refusals_logged(operator, "after"), timeout=45)
        assert "the audit chain is broken" in refused[0]
        assert (get(kubectl, ns, "after").get("status") or {}).get("phase") != "Pending"
        assert operator.audit_file.read_text() == ""
        assert any(
            r.get("message") == "audit chain broken; no decision will be recorded"
            for r in operator.log_records()
        )

        reset = cli(
            "audit", "reset", str(operator.audit_file), "--key-file",
            str(operator.audit_key_file), "--anchor", f"{ns}/{ANCHOR}",
            "--reason", "test: log emptied",
        )  # fmt: skip
        assert reset.returncode == 0, reset.stderr
        operator.restart()
        poll(lambda: operator.metric("greenlight_audit_chain_broken") == 0, timeout=30)
        records = poll(
            lambda: [r for r in operator.audit_records() if r["event"] == "requested"] or None,
            timeout=60,
        )
        assert records[0]["request"]["name"] == "after"
        first = operator.audit_records()[0]
        assert (first["event"], first["details"]["anchor"]["seq"]) == ("chain_reset", anchored)
        assert first["actor"] != "greenlight"
    finally:
        operator.stop()


def test_second_operator_on_the_same_audit_file_fails_to_start(
    without_shared_operator: None, control_plane: ControlPlane, tmp_path: Path
) -> None:
    first = OperatorProcess(control_plane, tmp_path / "op")
    first.start()
    second = OperatorProcess(control_plane, tmp_path / "op")
    second.log_file = tmp_path / "second.log"
    try:
        with pytest.raises(RuntimeError, match="operator exited"):
            second.start()
        assert "is already open for writing" in second.tail()
    finally:
        second.stop()
        first.stop()
