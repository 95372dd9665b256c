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


@dataclass(frozen=True)
class FollowUp:
    """A reminder, or an escalation step, added to an announcement. `key` is unique per request
    ("reminder-2", "escalation-1"): a notifier that can look its own messages up posts each
    key at most once per announcement, across restarts."""

    key: str
    text: str
    slack_user_groups: tuple[str, ...] = ()  # mentioned in Slack (<!subteam^ID>)
    teams_tags: tuple[str, ...] = ()  # mentioned in Teams


class NotifierError(Exception):
    """A notification could not be delivered now; the caller retries later."""


class Notifier(Protocol):
    """One chat channel kind. Adding a channel is one module that implements this: the
    announcer (adapters/announce.py) decides when each method is due, records the result and
    counts delivery metrics for every notifier alike."""

    # The metric label `channel` and `via` on status.notifications: console, slack or teams.
    name: str
    # True when delivery is local and cannot block (the console): a new request is then told
    # before its first status write, so it is written once, Pending and announced. A remote
    # notifier is told after that write, so a slow chat API never delays Pending. Likewise a
    # terminal status is written with its immediate messages marked resolved, and they are
    # updated right after that write (one write per transition instead of two).
    immediate: bool

    def channels(self, request: RequestView) -> tuple[str, ...]:
        """Where this notifier announces `request`: the request's own channel or the default,
        and the channels its effective policy adds. Empty: this notifier does not announce it."""
        ...

    async def notify(
        self, request: RequestView, channel: str | None = None, *, fresh: bool = False
    ) -> NotificationRef:
        """Announce a pending request on `channel` (None: the request's own or the default).
        `fresh`: no announcement of it on `channel` can have been tried before (the request was
        created while this replica watched, and this is the first try), so a notifier that
        looks its earlier message up before posting need not. Raises NotifierError when
        delivery failed."""
        ...

    async def resolve(self, request: RequestView, ref: NotificationRef) -> None:
        """Show the outcome of a terminal request on the message announced earlier."""
        ...

    async def remind(self, request: RequestView, ref: NotificationRef, note: FollowUp) -> None:
        """Add `note` (a reminder, or an escalation that mentions people) to the message
        announced earlier. Raises NotifierError when delivery failed."""
        ...
