"""Greenlight's marks in tests: a fixed key, and stamps and records signed with it, so the pure
core can be fed objects as the webhook would have left them (and ones it would not have)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from greenlight.core import lifecycle
from greenlight.core.model import Phase
from greenlight.core.request import Request, Status
from greenlight.core.stamps import DecisionRecord, Stamp, Subject, plan_digest, record_key
from greenlight.core.timefmt import parse_time

KEY = b"t" * 32


def stamp(obj: Mapping[str, Any], user: str, groups: tuple[str, ...] = ()) -> str:
    """The requested-by stamp the webhook would write on `obj` for `user`."""
    meta, spec = obj["metadata"], obj["spec"]
    subject = Subject(
        namespace=str(meta["namespace"]),
        action=str(spec["action"]),
        target=str(spec["target"]),
        plan_digest=plan_digest(str((spec.get("plan") or {}).get("details") or "")),
    )
    at = parse_time(str(meta["creationTimestamp"]))
    return Stamp(user, groups, at).signed(KEY, subject).to_annotation()


def signed(record: DecisionRecord, uid: str) -> tuple[str, str]:
    """(annotation key, value) of `record`, issued for the object `uid`."""
    return record_key(record.user), record.signed(KEY, uid).to_annotation()


@dataclass(frozen=True)
class Outcome:
    """A transition with its status as the JSON the operator writes."""

    status: dict[str, Any]
    audit: tuple[lifecycle.AuditEntry, ...]
    entered: Phase | None
    before: Status

    def changes(self, obj: Mapping[str, Any]) -> bool:
        return self.status != (obj.get("status") or {})


def reconcile(obj: Mapping[str, Any], now: datetime) -> Outcome:
    request = Request.parse(obj, KEY)
    transition = lifecycle.reconcile(request, now)
    return Outcome(
        transition.status.to_json(), transition.audit, transition.entered, request.status
    )
