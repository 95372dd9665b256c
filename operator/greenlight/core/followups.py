"""Reminders and escalation: when a pending request is due to be brought up again.

All times count from the request's own `creationTimestamp`, so a restarted operator reschedules
exactly what it would have done, and `status.followUps` (how many reminders and escalation steps
went out) says what was done already. A reminder due several times while the operator was down
goes out once, numbered for the latest interval; escalation steps go out each, in order. Nothing
is due once the request has expired, or at or after its expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Schedule:
    """From the effective policy: remind every `every`; escalate at each of `steps` (the
    time after creation of each escalation step, increasing)."""

    every: timedelta | None = None
    steps: tuple[timedelta, ...] = ()


@dataclass(frozen=True)
class Progress:
    """`status.followUps`: the number of the last reminder sent, and escalation steps done."""

    reminders: int = 0
    escalations: int = 0

    def to_json(self) -> dict[str, int]:
        return {"reminders": self.reminders, "escalations": self.escalations}

    @classmethod
    def from_json(cls, data: Any) -> Progress:
        if not isinstance(data, dict):
            return cls()
        return cls(int(data.get("reminders") or 0), int(data.get("escalations") or 0))


@dataclass(frozen=True)
class Due:
    reminder: int = 0  # the reminder number due now; 0: none
    escalations: tuple[int, ...] = ()  # escalation steps due now (1-based)

    def __bool__(self) -> bool:
        return bool(self.reminder or self.escalations)


def due(
    schedule: Schedule, created: datetime, expires_at: datetime, now: datetime, done: Progress
) -> Due:
    """What is due at `now`, given what was done."""
    if now >= expires_at:
        return Due()
    reminder = 0
    if schedule.every is not None and schedule.every > timedelta(0):
        latest = int((now - created) / schedule.every)
        if latest > done.reminders and created + latest * schedule.every < expires_at:
            reminder = latest
    steps = tuple(
        number
        for number, after in enumerate(schedule.steps, start=1)
        if number > done.escalations and created + after <= now
    )
    return Due(reminder, steps)


def next_at(
    schedule: Schedule, created: datetime, expires_at: datetime, done: Progress
) -> datetime | None:
    """When something will next be due (None: nothing before the request expires)."""
    candidates = []
    if schedule.every is not None and schedule.every > timedelta(0):
        candidates.append(created + (done.reminders + 1) * schedule.every)
    if done.escalations < len(schedule.steps):
        candidates.append(created + schedule.steps[done.escalations])
    upcoming = [at for at in candidates if at < expires_at]
    return min(upcoming) if upcoming else None


def after(done: Progress, now_due: Due) -> Progress:
    """The progress once what was due went out."""
    return Progress(
        max(done.reminders, now_due.reminder),
        max((done.escalations, *now_due.escalations)),
    )
