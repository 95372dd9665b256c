"""kill -9 at random moments while requests are created and decided: nothing lost, nothing doubled.

The guarantee under test (docs/benchmarks.md, "Resilience"): every decision the API server accepted
ends in exactly one terminal transition; each request has exactly one `requested` and one
terminal audit record, and at most one notification: one `notified` audit record exactly when
status.notifications holds one (resolved) entry. A request decided before the operator got to
announce it is not announced. The console notifier's log line may repeat after a crash; its
status entry and audit record do not.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.resilience.cluster import (
    Requests,
    audit_by_uid,
    manifest,
    phase,
    settled,
    terminal_records,
    verify_audit,
)
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.devcluster import ControlPlane

REQUESTS = 200
# What happens to request i, by i % 4: (outcome, who decides, requiredApprovals).
PLANS = (
    ("Approved", "alice", 1),
    ("Denied", "bob", 1),
    ("Approved", "bob", 2),  # alice approves first, bob's approval completes the quorum
    ("Cancelled", "orchestrator", 1),
)


class Killer(threading.Thread):
    """SIGKILLs the operator at random moments and starts it again, until stopped."""

    def __init__(self, operator: OperatorProcess, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.operator = operator
        self.rng = rng
        self.stopped = threading.Event()
        self.kills = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.rng.uniform(0.3, 2.0)):
                self.operator.kill()
                self.kills += 1
                time.sleep(self.rng.uniform(0.0, 0.5))
                self.operator.start(timeout=60)
        except BaseException as exc:  # surfaced by the test
            self.error = exc


@pytest.fixture
def operator(
    operator_process: OperatorProcess, people: People, control_plane: ControlPlane, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """An operator of its own that serves only this test's namespace: every restart then resumes
    this test's 200 requests, not whatever earlier tests left in the shared control plane."""
    operator_process.kill()  # the `operator` fixture of later tests starts it again
    own = OperatorProcess(
        control_plane, tmp_path / "operator", env={"GREENLIGHT_NAMESPACES": people.namespace}
    )
    own.start()
    yield own
    own.stop()


# 200 requests while the operator is killed every 0.3-2 s: about 3 minutes on a quiet machine,
# over 5 in a loaded full suite (the suite's default timeout).
@pytest.mark.timeout(600)
def test_kill_9_at_random_points_loses_no_decision_and_doubles_no_transition(
    operator: OperatorProcess, people: People, control_plane: ControlPlane
) -> None:
    seed = int(os.environ.get("GREENLIGHT_RESILIENCE_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    ns = people.namespace
    orchestrator = Requests(control_plane, ns, people.orchestrator)
    as_user = {
        "alice": Requests(control_plane, ns, people.alice),
        "bob": Requests(control_plane, ns, people.bob),
        "orchestrator": orchestrator,
    }
    names = [f"crash-{i:03d}" for i in range(REQUESTS)]

    def drive(index: int) -> None:
        """Create one request, wait until it is Pending, then decide it (with retries)."""
        name = names[index]
        outcome, decider, approvals = PLANS[index % len(PLANS)]
        orchestrator.create(manifest(name, approvals=approvals))
        deadline = time.monotonic() + 120
        while phase(orchestrator.get(name)) != "Pending":
            assert time.monotonic() < deadline, f"{name} never became Pending"
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 0.3))
        if outcome == "Cancelled":
            as_user[decider].annotate(name, {"greenlight.dev/cancel": "true"})
        elif outcome == "Denied":
            as_user[decider].annotate(
                name, {"greenlight.dev/decision": "deny", "greenlight.dev/reason": "not now"}
            )
        else:
            if approvals == 2:
                as_user["alice"].annotate(name, {"greenlight.dev/decision": "approve"})
            as_user[decider].annotate(name, {"greenlight.dev/decision": "approve"})

    killer = Killer(operator, rng)
    killer.start()
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            list(pool.map(drive, range(REQUESTS)))
    finally:
        killer.stopped.set()
        killer.join(timeout=90)
    assert killer.error is None, f"restarting the operator failed (seed {seed}): {killer.error}"
    assert killer.kills >= 3, f"only {killer.kills} kills happened (seed {seed})"
    if not operator.running:
        operator.start()

    objects = orchestrator.wait(names, settled, within=180)
    audit = audit_by_uid(operator.audit_records())
    notified_count = 0
    for index, name in enumerate(names):
        obj = objects[name]
        outcome, decider, approvals = PLANS[index % len(PLANS)]
        status = obj["status"]
        expected_by = people.orchestrator if decider == "orchestrator" else decider
        context = f"{name} (seed {seed}, {killer.kills} kills): {status}"
        assert status["phase"] == outcome, context
        assert status["decision"]["by"] == expected_by, context
        if outcome == "Approved":
            assert sorted(a["user"] for a in status["approvals"]) == sorted(
                ["alice", "bob"][:approvals] if approvals == 2 else [decider]
            ), context
        entries = [(n["channel"], n["state"]) for n in status["notifications"]]
        assert entries in ([], [("console", "resolved")]), context
        events = audit.get(obj["metadata"]["uid"], {})
        assert events.get("requested") == 1, f"{context}; audit {events}"
        assert events.get("notified", 0) == len(entries), f"{context}; audit {events}"
        notified_count += len(entries)
        assert terminal_records(events) == 1, f"{context}; audit {events}"

    assert notified_count >= REQUESTS // 2, f"only {notified_count} requests were announced"
    verified = verify_audit(operator.audit_file, operator.audit_key_file)
    assert verified.returncode == 0, verified.stderr + verified.stdout
