"""What Greenlight knows it posted to Teams, kept on the operator's data volume.

The Bot Connector has no idempotency key and no way to read a channel's messages back, so a card
cannot be found again the way a Slack message is (by its metadata in the channel history).
Instead, for each (request uid, conversation) one small file records the post, with fsync and an
atomic rename, *before* anything else learns of it:

1. `posting` is written before the card is sent;
2. `posted` with the activity id as soon as the Bot Connector answered — before `notify`
   returns, so before the `notified` audit record and the status write;
3. the file is removed again when the Bot Connector answered with an error (nothing was posted).

A restart (or the standby replica, which shares the volume) that finds `posted` returns the
recorded card instead of posting another. One that finds `posting` cannot know whether the card
exists (the operator died, or the connection dropped, while the post was in flight): it does not
post again; the first click on that card carries its activity id and *adopts* it (`adopt`). The
outcome reply and each follow-up (a reminder, an escalation) in the card's thread are recorded
the same way (`reply`, `follow_up`). docs/teams.md states the
guarantee. Files older than the longest request lifetime (plus a day) are removed at start.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import structlog

RETENTION_SECONDS = 8 * 24 * 3600  # the longest request lifetime (7 d) and a day

log = structlog.get_logger(__name__)


class State(enum.StrEnum):
    POSTING = "posting"  # sent, or about to be; no answer recorded
    POSTED = "posted"  # the Bot Connector named the activity


@dataclass(frozen=True)
class CardRecord:
    uid: str
    conversation: str
    state: State
    activity_id: str = ""
    reply: str = ""  # "" (not replied), State.POSTING or State.POSTED
    at: float = 0.0
    follow_ups: tuple[tuple[str, str], ...] = ()  # (FollowUp key, State) in its thread


class CardJournal:
    """One file per (request uid, conversation) under `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = time.time,
        retention_seconds: float = RETENTION_SECONDS,
    ) -> None:
        self._dir = directory
        self._clock = clock
        self._retention = retention_seconds

    def open(self) -> None:
        """Create the directory and drop records past the retention."""
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        horizon = self._clock() - self._retention
        for path in self._dir.glob("*.json"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < horizon:
                    path.unlink()
        for path in self._dir.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                path.unlink()

    def lookup(self, uid: str, conversation: str) -> CardRecord | None:
        """The record for the card, or None when none was ever begun. An unreadable record
        reads as `posting`: whether that card exists is then unknown, never assumed absent."""
        path = self._path(uid, conversation)
        try:
            data = json.loads(path.read_text())
            record = CardRecord(
                uid=str(data["uid"]),
                conversation=str(data["conversation"]),
                state=State(data["state"]),
                activity_id=str(data.get("activity_id") or ""),
                reply=str(data.get("reply") or ""),
                at=float(data.get("at") or 0),
                follow_ups=tuple((str(k), str(v)) for k, v in data.get("follow_ups") or ()),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("teams card record unreadable", path=str(path), error=str(exc)[:200])
            return CardRecord(uid, conversation, State.POSTING)
        if (record.uid, record.conversation) != (uid, conversation):
            log.error("teams card record names another card", path=str(path))
            return CardRecord(uid, conversation, State.POSTING)
        return record

    def begin(self, uid: str, conversation: str) -> None:
        self._write(CardRecord(uid, conversation, State.POSTING, at=self._clock()))

    def posted(self, uid: str, conversation: str, activity_id: str) -> CardRecord:
        record = CardRecord(uid, conversation, State.POSTED, activity_id, at=self._clock())
        self._write(record)
        return record

    def forget(self, uid: str, conversation: str) -> None:
        """Nothing was posted after all (the Bot Connector answered with an error)."""
        with contextlib.suppress(FileNotFoundError):
            self._path(uid, conversation).unlink()
        self._sync_dir()

    def adopt(self, uid: str, conversation: str, activity_id: str) -> bool:
        """Record `activity_id` for a card whose post had no answer; True when adopted."""
        record = self.lookup(uid, conversation)
        if record is None or record.state is not State.POSTING or not activity_id:
            return False
        self.posted(uid, conversation, activity_id)
        log.info("teams card adopted from a click", uid=uid, activity_id=activity_id)
        return True

    def reply(self, record: CardRecord, state: State | None) -> CardRecord:
        """The same record with the outcome reply `state` (None: not replied)."""
        updated = replace(record, reply=state.value if state else "", at=self._clock())
        self._write(updated)
        return updated

    def follow_up(self, record: CardRecord, key: str, state: State | None) -> CardRecord:
        """The same record with the follow-up `key` in `state` (None: not posted)."""
        kept = tuple((k, v) for k, v in record.follow_ups if k != key)
        added = ((key, state.value),) if state else ()
        updated = replace(record, follow_ups=kept + added, at=self._clock())
        self._write(updated)
        return updated

    def _path(self, uid: str, conversation: str) -> Path:
        key = hashlib.sha256(f"{uid}\n{conversation}".encode()).hexdigest()[:40]
        return self._dir / f"{key}.json"

    def _write(self, record: CardRecord) -> None:
        path = self._path(record.uid, record.conversation)
        temporary = self._dir / f".{path.stem}.{secrets.token_hex(4)}.tmp"
        data = json.dumps({**asdict(record), "state": record.state.value}).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
