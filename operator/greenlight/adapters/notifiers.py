"""Notifiers: tell people a request waits, and tell them again when it is resolved.

A notifier posts at most once per request (the handler records the returned reference in
`status.notifications` and never calls `notify` again for a channel that has one) and updates
that message when the request reaches a terminal phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from greenlight.core.model import RequestView


@dataclass(frozen=True)
class NotificationRef:
    """Where a notification went: `status.notifications[]` holds these."""

    channel: str  # "console", or the Slack channel id
    ref: str  # e.g. the Slack message ts; "" for the console


class NotifierError(Exception):
    """A notification could not be delivered now; the caller retries later."""


class Notifier(Protocol):
    name: str  # metric label `channel`: "console" | "slack"
    # True when delivery is local and cannot block (the console): a new request is then told
    # before its first status write, so it is written once, Pending and announced. A remote
    # notifier is told after that write, so a slow chat API never delays Pending.
    immediate: bool

    async def notify(self, request: RequestView) -> NotificationRef:
        """Announce a pending request. Raises NotifierError when delivery failed."""
        ...

    async def resolve(self, request: RequestView, ref: NotificationRef) -> None:
        """Show the outcome of a terminal request on the message announced earlier."""
        ...
