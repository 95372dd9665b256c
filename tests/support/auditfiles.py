"""Consistent copies of a live audit log.

The operator appends a record, then replaces the head file. A copy taken while it writes can
catch the log one record ahead of (or behind) the head, which verification rightly reports as
tampering; so a copy is retaken until the head did not move and the log ends at it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from greenlight.adapters.auditlog import head_path


def snapshot(log: Path, directory: Path, timeout: float = 10.0) -> Path:
    """Copy `log` and its head file into `directory`; return the copied log's path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / log.name
    deadline = time.monotonic() + timeout
    while True:
        head_before = head_path(log).read_bytes()
        shutil.copyfile(log, target)
        head_after = head_path(log).read_bytes()
        lines = target.read_bytes().splitlines()
        last_seq = json.loads(lines[-1])["seq"] if lines else 0
        if head_before == head_after and json.loads(head_after)["seq"] == last_seq:
            head_path(target).write_bytes(head_after)
            return target
        if time.monotonic() > deadline:
            raise AssertionError(f"{log} kept changing; no consistent copy in {timeout}s")
        time.sleep(0.05)
