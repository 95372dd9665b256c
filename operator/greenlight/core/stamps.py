"""Greenlight's marks on an object: the requested-by stamp and the decision records.

Both are annotations that only Greenlight writes: the admission webhook, after the API server
authenticated the caller, and the operator itself (decisions from chat). Each carries a MAC under
a key only the operator holds, bound to what it is about, so that a stamp or a record written
while no webhook covered the object (a namespace added to the watch list later, an upgrade, a
planted annotation) is recognised as not issued by Greenlight and never decided on.

- A stamp names the creator and is bound to the namespace, action, target and plan of the request
  and to the moment it was issued, which must lie within `STAMP_SKEW` of the object's
  `creationTimestamp` (the uid and the generated name do not exist yet when it is issued).
- A decision record names one user's decision and is bound to the object's uid, so a record
  copied onto another object (or onto a recreated one with the same name) is not valid there.
- An execution record names who claimed an Approved request's receipt and when, and once the
  command ended, when and with which exit code; it is bound to the uid and to the receipt's
  digest, so it belongs to one approval of one object.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from greenlight.core.model import DECISION_RECORD_PREFIX, Action, Identity, Via
from greenlight.core.timefmt import format_precise, parse_time

STAMP_SKEW = timedelta(seconds=60)
_RECORD_DOMAIN = b"greenlight/decision-record/v1"
_STAMP_DOMAIN = b"greenlight/requested-by/v1"
_EXECUTION_DOMAIN = b"greenlight/execution/v1"
EXIT_UNKNOWN = "unknown"  # a finish reported without an exit code (the command's fate is unknown)


def derive_key(secret: bytes) -> bytes:
    """The MAC key for stamps and records, derived from the operator's secret (the audit key)."""
    return hmac.new(secret, b"greenlight/marks/v1", hashlib.sha256).digest()


def _mac(key: bytes, domain: bytes, payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, domain + b"\n" + text.encode(), hashlib.sha256).hexdigest()


def record_key(user: str) -> str:
    """The annotation key holding `user`'s decision (user names may hold characters keys can't)."""
    return DECISION_RECORD_PREFIX + hashlib.sha256(user.encode("utf-8")).hexdigest()[:40]


def plan_digest(details: str) -> str:
    return "sha256:" + hashlib.sha256(details.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DecisionRecord:
    """One authenticated, authorized decision, as stored on the object."""

    user: str
    action: Action
    at: datetime
    via: Via
    reason: str = ""
    groups: tuple[str, ...] = ()
    mac: str = field(default="", compare=False)

    def _payload(self, uid: str) -> dict[str, Any]:
        return {
            "uid": uid,
            "user": self.user,
            "groups": list(self.groups),
            "action": self.action.value,
            "reason": self.reason,
            "at": format_precise(self.at),
            "via": self.via.value,
        }

    def signed(self, key: bytes, uid: str) -> DecisionRecord:
        return DecisionRecord(
            self.user,
            self.action,
            self.at,
            self.via,
            self.reason,
            self.groups,
            _mac(key, _RECORD_DOMAIN, self._payload(uid)),
        )

    def valid(self, key: bytes, uid: str) -> bool:
        expected = _mac(key, _RECORD_DOMAIN, self._payload(uid))
        return bool(self.mac) and hmac.compare_digest(self.mac, expected)

    def to_annotation(self) -> str:
        payload = self._payload("")
        del payload["uid"]
        payload["mac"] = self.mac
        return json.dumps(payload, sort_keys=True)

    @classmethod
    def from_annotation(cls, text: str) -> DecisionRecord:
        try:
            data = json.loads(text)
            return cls(
                user=str(data["user"]),
                groups=tuple(str(g) for g in data.get("groups", ())),
                action=Action(data["action"]),
                reason=str(data.get("reason", "")),
                at=parse_time(str(data["at"])),
                via=Via(data["via"]),
                mac=str(data.get("mac", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise ValueError(f"malformed decision record: {exc}") from exc

    @property
    def identity(self) -> Identity:
        return Identity(user=self.user, groups=self.groups)

    @property
    def key(self) -> str:
        """Unique per attempt: the user and the moment (microseconds)."""
        return f"{self.user}@{format_precise(self.at)}"


@dataclass(frozen=True)
class Subject:
    """What a stamp is bound to: the parts of a request that say what would be done, where."""

    namespace: str
    action: str
    target: str
    plan_digest: str


@dataclass(frozen=True)
class Stamp:
    """Who created the request, as the webhook saw them, and what admission decided for it:
    the effective policy (`status.policy` JSON) and Greenlight's reading of the plan
    (`status.plan` JSON). Both are under the MAC; a stamp issued before policies existed has
    neither and verifies as it always did."""

    user: str
    groups: tuple[str, ...]
    at: datetime
    mac: str = field(default="", compare=False)
    policy: Mapping[str, Any] | None = field(default=None, compare=False)
    plan: Mapping[str, Any] | None = field(default=None, compare=False)

    def _payload(self, subject: Subject) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "user": self.user,
            "groups": list(self.groups),
            "at": format_precise(self.at),
            "namespace": subject.namespace,
            "action": subject.action,
            "target": subject.target,
            "planDigest": subject.plan_digest,
        }
        if self.policy is not None:
            payload["policy"] = self.policy
        if self.plan is not None:
            payload["plan"] = self.plan
        return payload

    def signed(self, key: bytes, subject: Subject) -> Stamp:
        return replace(self, mac=_mac(key, _STAMP_DOMAIN, self._payload(subject)))

    def valid(self, key: bytes, subject: Subject, created: datetime) -> bool:
        if not self.mac or abs(created - self.at) > STAMP_SKEW:
            return False
        return hmac.compare_digest(self.mac, _mac(key, _STAMP_DOMAIN, self._payload(subject)))

    def to_annotation(self) -> str:
        data: dict[str, Any] = {
            "user": self.user,
            "groups": list(self.groups),
            "at": format_precise(self.at),
            "mac": self.mac,
        }
        if self.policy is not None:
            data["policy"] = self.policy
        if self.plan is not None:
            data["plan"] = self.plan
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_annotation(cls, text: str) -> Stamp:
        try:
            data = json.loads(text)
            policy, plan = data.get("policy"), data.get("plan")
            if not isinstance(policy, Mapping | None) or not isinstance(plan, Mapping | None):
                raise TypeError("policy and plan must be objects")
            return cls(
                user=str(data["user"]),
                groups=tuple(str(g) for g in data.get("groups", ())),
                at=parse_time(str(data["at"])),
                mac=str(data.get("mac", "")),
                policy=policy,
                plan=plan,
            )
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise ValueError(f"malformed requested-by stamp: {exc}") from exc


@dataclass(frozen=True)
class ExecutionRecord:
    """The claim of one approval receipt and, once reported, how the command ended.

    `exit_code` is the command's exit status as `greenlight exec` reported it, or
    `EXIT_UNKNOWN`; None (with `finished_at` None) while the command runs or after its
    runner died. Times are the admission webhook's, never the caller's."""

    user: str
    claimed_at: datetime
    receipt: str  # the receipt envelope's digest (sha256:<hex>)
    finished_at: datetime | None = None
    exit_code: int | str | None = None
    mac: str = field(default="", compare=False)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def _payload(self, uid: str) -> dict[str, Any]:
        return {
            "uid": uid,
            "user": self.user,
            "claimedAt": format_precise(self.claimed_at),
            "receipt": self.receipt,
            "finishedAt": format_precise(self.finished_at) if self.finished_at else None,
            "exitCode": self.exit_code,
        }

    def signed(self, key: bytes, uid: str) -> ExecutionRecord:
        return replace(self, mac=_mac(key, _EXECUTION_DOMAIN, self._payload(uid)))

    def valid(self, key: bytes, uid: str) -> bool:
        expected = _mac(key, _EXECUTION_DOMAIN, self._payload(uid))
        return bool(self.mac) and hmac.compare_digest(self.mac, expected)

    def to_annotation(self) -> str:
        payload = self._payload("")
        del payload["uid"]
        payload["mac"] = self.mac
        return json.dumps(payload, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_annotation(cls, text: str) -> ExecutionRecord:
        try:
            data = json.loads(text)
            code = data.get("exitCode")
            if not (code is None or code == EXIT_UNKNOWN or type(code) is int):
                raise TypeError(f"exitCode {code!r} is neither an integer nor {EXIT_UNKNOWN!r}")
            finished = data.get("finishedAt")
            return cls(
                user=str(data["user"]),
                claimed_at=parse_time(str(data["claimedAt"])),
                receipt=str(data["receipt"]),
                finished_at=parse_time(str(finished)) if finished else None,
                exit_code=code,
                mac=str(data.get("mac", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise ValueError(f"malformed execution record: {exc}") from exc
