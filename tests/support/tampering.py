"""What an attacker with write access to the audit file might do, as functions over its lines.

Each takes the log's lines (with their newlines) and returns the tampered lines, plus the
1-based line number that verification must name as the first bad one.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from greenlight.core import audit

Lines = list[str]
Tamper = Callable[[Lines], tuple[Lines, int]]


def edit(index: int) -> Tamper:
    """Change who decided in record `index` (0-based), keeping its stored hash."""

    def apply(lines: Lines) -> tuple[Lines, int]:
        record = json.loads(lines[index])
        record["actor"] = "mallory"
        changed = [*lines]
        changed[index] = json.dumps(record, sort_keys=True) + "\n"
        return changed, index + 1

    return apply


def delete(index: int) -> Tamper:
    def apply(lines: Lines) -> tuple[Lines, int]:
        return lines[:index] + lines[index + 1 :], index + 1

    return apply


def reorder(index: int) -> Tamper:
    """Swap record `index` with the one after it."""

    def apply(lines: Lines) -> tuple[Lines, int]:
        changed = [*lines]
        changed[index], changed[index + 1] = changed[index + 1], changed[index]
        return changed, index + 1

    return apply


def truncate_mid_line(lines: Lines) -> tuple[Lines, int]:
    """Cut the file in the middle of its last record (a crash or a careless `head -c`)."""
    last = lines[-1]
    return [*lines[:-1], last[: len(last) // 2]], len(lines)


def truncate_at_boundary(lines: Lines) -> tuple[Lines, int]:
    """Drop the last record whole: the chain still links; only the head file can tell."""
    return lines[:-1], len(lines)


def append_forged(lines: Lines) -> tuple[Lines, int]:
    """Append a record that chains correctly and has a correct hash, but no valid MAC."""
    last = json.loads(lines[-1])
    forged = {k: v for k, v in last.items() if k not in ("seq", "prev", "hash", "mac")}
    forged.update(event="decided", actor="mallory", outcome="Approved")
    record = audit.seal(forged, seq=int(last["seq"]) + 1, prev=str(last["hash"]), key=b"guess")
    return [*lines, json.dumps(record, sort_keys=True) + "\n"], len(lines) + 1


def rewrite_tail(lines: Lines) -> tuple[Lines, int]:
    """Edit the last record and recompute its hash (what a careful attacker does)."""
    last = json.loads(lines[-1])
    body = {k: v for k, v in last.items() if k not in ("seq", "prev", "hash", "mac")}
    body["actor"] = "mallory"
    record = audit.seal(body, seq=int(last["seq"]), prev=str(last["prev"]), key=None)
    record["mac"] = last.get("mac", "")
    return [*lines[:-1], json.dumps(record, sort_keys=True) + "\n"], len(lines)
