"""Two replicas with kopf peering: one active, the other takes over when it dies.

Both replicas serve the admission webhook (it is stateless: identity, authorization, an audit
record in the replica's own chain). Without a Service in front of them here, the webhook
configuration points at the replica started last, the standby, so decisions keep flowing while
the active replica is killed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.resilience.cluster import Requests, audit_by_uid, manifest, notified, settled
from tests.support.fixtures import REPO
from tests.support.kubectl import Kubectl
from tests.support.operator import OperatorProcess
from tests.support.operator_fixtures import People

from greenlight.app import PEERING_LIFETIME
from greenlight.devcluster import ControlPlane, install

PEERING = "greenlight-resilience"


def replica(plane: ControlPlane, workdir: Path, priority: int) -> OperatorProcess:
    """One replica with its own audit chain; every replica shares one audit key (as the chart's
    Secret gives them), from which the key of Greenlight's marks is derived: a stamp one
    replica's webhook wrote must verify in the replica that reconciles."""
    shared_key = workdir.parent / "shared-audit.key"
    return OperatorProcess(
        plane,
        workdir,
        env={
            "GREENLIGHT_PEERING": PEERING,
            "GREENLIGHT_PRIORITY": str(priority),
            "GREENLIGHT_AUDIT_KEY_FILE": str(shared_key),
        },
    )


def test_two_replicas_one_active_and_the_standby_takes_over_without_double_notifications(
    without_shared_operator: None,
    people: People,
    control_plane: ControlPlane,
    kubectl: Kubectl,
    tmp_path: Path,
) -> None:
    install(
        control_plane.kubeconfig, [REPO / "helm" / "greenlight" / "crds" / "kopf.dev_peerings.yaml"]
    )
    kubectl(
        "apply",
        "-f",
        "-",
        input=(
            f"apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\nmetadata:\n  name: {PEERING}\n"
        ),
    )
    ns = people.namespace
    orchestrator = Requests(control_plane, ns, people.orchestrator)
    alice = Requests(control_plane, ns, people.alice)
    active = replica(control_plane, tmp_path / "active", priority=1)
    standby = replica(control_plane, tmp_path / "standby", priority=0)
    first = [f"first-{i}" for i in range(5)]
    second = [f"second-{i}" for i in range(5)]
    active.start()
    try:
        standby.start()
        time.sleep(2)  # the standby reads the peering object and pauses
        with ThreadPoolExecutor(max_workers=5) as pool:
            list(pool.map(lambda n: orchestrator.create(manifest(n)), first))
        objects = orchestrator.wait(first, notified, within=60)
        uids = {objects[n]["metadata"]["uid"] for n in first}
        assert uids <= set(audit_by_uid(active.audit_records())), "the active replica idled"
        assert not uids & set(audit_by_uid(standby.audit_records())), (
            "the standby processed requests while the active replica was alive"
        )

        active.kill()
        killed_at = time.monotonic()
        with ThreadPoolExecutor(max_workers=5) as pool:
            list(pool.map(lambda n: orchestrator.create(manifest(n)), second))
        alice.annotate(first[0], {"greenlight.dev/decision": "approve"})
        orchestrator.wait(second, notified, within=PEERING_LIFETIME + 45)
        takeover = time.monotonic() - killed_at
        objects = orchestrator.wait(first[:1], settled, within=30)
        assert objects[first[0]]["status"]["phase"] == "Approved"
    finally:
        standby.stop()
        active.kill()

    assert takeover <= PEERING_LIFETIME + 15, f"takeover took {takeover:.1f} s"
    records = active.audit_records() + standby.audit_records()
    counts = audit_by_uid(records)
    final = orchestrator.all()
    for name in first + second:
        obj = final[name]
        events = counts[obj["metadata"]["uid"]]
        assert events.get("requested") == 1, (name, events)
        assert events.get("notified") == 1, (name, events)
        assert len(obj["status"]["notifications"]) == 1, (name, obj["status"])
