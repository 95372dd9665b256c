"""What the operator's handlers share while it runs (kept in kopf's operator-wide memo)."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field

from greenlight.adapters.auditlog import AuditLog
from greenlight.adapters.decisions import DecisionService
from greenlight.adapters.kube import Kube
from greenlight.adapters.notifiers import Notifier
from greenlight.adapters.reconciler import ExpiryClock, PendingBook
from greenlight.config import Settings
from greenlight.core.model import Identity


@dataclass
class Runtime:
    settings: Settings
    kube: Kube
    audit: AuditLog
    operator: Identity
    notifier: Notifier
    decisions: DecisionService
    expiry: ExpiryClock = field(default_factory=ExpiryClock)
    pending: PendingBook = field(default_factory=PendingBook)
    # One reconcile at a time per object within this process: kopf serializes its own handlers,
    # but the expiry clock and the start-up catch-up run beside them.
    locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        key = (namespace, name)
        found = self.locks.get(key)
        if found is None:
            found = asyncio.Lock()
            self.locks[key] = found
        return found

    extra_operator_users: frozenset[str] = field(default_factory=frozenset)

    def is_operator(self, caller: Identity) -> bool:
        """The operator's own writes (status, decision records from Slack, kopf bookkeeping)."""
        return caller.user == self.operator.user or caller.user in self.extra_operator_users
