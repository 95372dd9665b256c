"""The policies and namespace labels admission judges every create against, kept current.

Three informers (adapters/informer.py) keep the ClusterApprovalPolicies, the ApprovalPolicies
and the namespaces' labels in memory on every replica, standby included. A policy is compiled
when it arrives; one that does not compile (written while no webhook checked policies) is kept
in its strict reading when only its condition is at fault (`PolicyError.fallback`), and
otherwise makes admission refuse every create it could have applied to, naming it: a policy
Greenlight cannot read never lets a request through with fewer rules than it asked for.
Until all three informers have listed once, `decide` raises `NotReady` (admission fails closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from greenlight.adapters.informer import Informer
from greenlight.core.model import GROUP, VERSION, Identity
from greenlight.core.plans import PlanReading
from greenlight.core.policies import (
    PolicyDecision,
    PolicyError,
    PolicyKind,
    PolicySet,
    RequestFacts,
    compile_policy,
)
from greenlight.core.timefmt import now
from greenlight.kube import Credentials

_log = structlog.get_logger("greenlight.policies")
CLUSTER_PLURAL = "clusterapprovalpolicies"
NAMESPACED_PLURAL = "approvalpolicies"
PLURALS = {PolicyKind.CLUSTER: CLUSTER_PLURAL, PolicyKind.NAMESPACED: NAMESPACED_PLURAL}


class NotReady(Exception):
    """The policies have not been listed yet: nothing can be judged."""


@dataclass
class PolicyIndex:
    policies: PolicySet = field(default_factory=PolicySet)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    # Policies that do not compile at all: (kind, namespace, name) -> the compile error.
    broken: dict[tuple[PolicyKind, str, str], str] = field(default_factory=dict)
    _informers: list[Informer] = field(default_factory=list)
    _fixed: bool = False

    @classmethod
    def fixed(cls, policies: PolicySet | None = None) -> PolicyIndex:
        """An index of exactly these policies, never listed from a cluster (tests, benches)."""
        return cls(policies=policies or PolicySet(), _fixed=True)

    def start(self, credentials: Credentials) -> list[asyncio.Task[None]]:
        base = f"/apis/{GROUP}/{VERSION}"
        self._informers = [
            Informer(
                credentials,
                f"{base}/{CLUSTER_PLURAL}",
                lambda items: self._replace(PolicyKind.CLUSTER, items),
                lambda kind, obj: self._apply(PolicyKind.CLUSTER, kind, obj),
            ),
            Informer(
                credentials,
                f"{base}/{NAMESPACED_PLURAL}",
                lambda items: self._replace(PolicyKind.NAMESPACED, items),
                lambda kind, obj: self._apply(PolicyKind.NAMESPACED, kind, obj),
            ),
            Informer(credentials, "/api/v1/namespaces", self._replace_namespaces, self._namespace),
        ]
        return [asyncio.create_task(informer.run()) for informer in self._informers]

    async def synced(self, within: float) -> bool:
        """Wait (at most `within` seconds) until every informer has listed once."""
        try:
            await asyncio.wait_for(
                asyncio.gather(*(i.synced.wait() for i in self._informers)), within
            )
        except TimeoutError:
            return False
        return True

    @property
    def ready(self) -> bool:
        if self._fixed:
            return True
        return bool(self._informers) and all(i.synced.is_set() for i in self._informers)

    def decide(
        self,
        namespace: str,
        spec: Mapping[str, Any],
        creator: Identity,
        plan: PlanReading | None,
    ) -> PolicyDecision:
        """What the installed policies say about a request about to be created."""
        if not self.ready:
            raise NotReady(
                "Greenlight has not loaded the approval policies yet (it lists them at start-up); "
                "try again in a few seconds"
            )
        labels = self.labels.get(namespace, {})
        facts = RequestFacts(
            namespace=namespace,
            spec=spec,
            requested_by=creator,
            now=now(),
            namespace_labels=labels,
            plan=plan,
        )
        return self.policies.evaluate(facts)

    def broken_in_scope(self, namespace: str) -> list[str]:
        """Policies that do not compile and could apply in `namespace`."""
        return [
            f"{kind.value}/{name}" if kind is PolicyKind.CLUSTER else f"{kind.value}/{ns}/{name}"
            for (kind, ns, name) in self.broken
            if kind is PolicyKind.CLUSTER or ns == namespace
        ]

    def _replace(self, kind: PolicyKind, items: Sequence[Mapping[str, Any]]) -> None:
        for policy in self.policies.policies():
            if policy.kind is kind:
                self.policies.remove(kind, policy.namespace, policy.name)
        self.broken = {key: error for key, error in self.broken.items() if key[0] is not kind}
        for obj in items:
            self._apply(kind, "ADDED", obj)

    def _apply(self, kind: PolicyKind, event: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        namespace = str(meta.get("namespace", "")) if kind is PolicyKind.NAMESPACED else ""
        key = (kind, namespace, name)
        self.broken.pop(key, None)
        if event == "DELETED":
            self.policies.remove(kind, namespace, name)
            return
        body = dict(obj)
        body.setdefault("kind", kind.value)
        try:
            self.policies.upsert(compile_policy(body))
        except PolicyError as exc:
            _log.error("a policy does not compile", policy=f"{kind.value}/{name}", error=str(exc))
            if exc.fallback is not None:
                self.policies.upsert(exc.fallback)
            else:
                self.policies.remove(kind, namespace, name)
                self.broken[key] = str(exc)

    def _replace_namespaces(self, items: Sequence[Mapping[str, Any]]) -> None:
        self.labels = {}
        for obj in items:
            self._namespace("ADDED", obj)

    def _namespace(self, event: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        if event == "DELETED":
            self.labels.pop(name, None)
        else:
            self.labels[name] = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
