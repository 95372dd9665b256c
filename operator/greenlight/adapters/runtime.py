"""What the operator's handlers share while it runs (kept in kopf's operator-wide memo)."""

from __future__ import annotations

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
    extra_operator_users: frozenset[str] = field(default_factory=frozenset)

    def is_operator(self, caller: Identity) -> bool:
        """The operator's own writes (status, decision records from Slack, kopf bookkeeping)."""
        return caller.user == self.operator.user or caller.user in self.extra_operator_users
