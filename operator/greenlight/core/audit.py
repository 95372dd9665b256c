"""The audit chain: pure functions that seal records and verify a log (DESIGN §4).

Each record is one JSON object per line. `hash` is the SHA-256 of the record's canonical JSON
(sorted keys, no spaces, without `hash` and `mac`), and the record carries the previous record's
hash in `prev`, from a fixed genesis value. Editing, removing or reordering any record breaks the
chain at that line. Two things a bare hash chain cannot see are covered too:

- an attacker who rewrites the tail and recomputes every hash: each record also carries `mac`,
  an HMAC-SHA256 of its hash under the operator's audit key, which the attacker does not hold;
- a file cut after a whole record: the writer keeps a *head* file (`<log>.head`) with the last
  sequence number and hash, and verification compares the log's end with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
EVENTS = ("requested", "notified", "decision_attempted", "decided", "expired", "cancelled")


def canonical(record: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k not in ("hash", "mac")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal(fields: Mapping[str, Any], *, seq: int, prev: str, key: bytes | None) -> dict[str, Any]:
    """Return `fields` as record number `seq` chained after `prev` (and MACed when `key` is set)."""
    record = {**fields, "seq": seq, "prev": prev}
    digest = hashlib.sha256(canonical(record)).hexdigest()
    record["hash"] = digest
    if key is not None:
        record["mac"] = hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()
    return record


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    message: str
    bad_line: int | None = None  # 1-based line number of the first bad record
    last: Head | None = None


def verify(
    lines: Iterable[str], *, key: bytes | None = None, head: Head | None = None
) -> Verification:
    """Check a whole log. The first problem found is reported with its line number."""
    prev, count, last = GENESIS, 0, None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            return _bad(number, count, "empty line inside the log")
        if not line.endswith("\n"):
            return _bad(number, count, "last record is cut short (the file was truncated)")
        try:
            record = json.loads(line)
        except ValueError:
            return _bad(number, count, "not valid JSON (edited or truncated)")
        if not isinstance(record, dict):
            return _bad(number, count, "not a JSON object")
        seq = count + 1
        if record.get("seq") != seq:
            return _bad(
                number,
                count,
                f"sequence {record.get('seq')} where {seq} was expected "
                "(a record was removed, inserted or reordered)",
            )
        if record.get("prev") != prev:
            return _bad(
                number,
                count,
                "does not chain to the record before it (a record was removed or reordered)",
            )
        digest = hashlib.sha256(canonical(record)).hexdigest()
        if record.get("hash") != digest:
            return _bad(number, count, "content does not match its hash (the record was edited)")
        if key is not None:
            expected = hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(str(record.get("mac", "")), expected):
                return _bad(number, count, "MAC does not match the audit key (forged record)")
        prev, count, last = digest, count + 1, Head(seq, digest)
    if head is not None:
        if last is None or last.seq < head.seq:
            ends = last.seq if last else 0
            return Verification(
                False,
                count,
                f"log ends at record {ends} but the head file "
                f"records {head.seq}: the log was truncated",
                count + 1,
                last,
            )
        if last.seq > head.seq:
            return Verification(
                False,
                count,
                f"record {head.seq + 1} and later were appended "
                "outside the operator (beyond the head file)",
                head.seq + 1,
                last,
            )
        if last.hash != head.hash:
            return Verification(
                False, count, "last record does not match the head file", count, last
            )
    return Verification(True, count, f"{count} records, chain intact", None, last)


def _bad(number: int, count: int, why: str) -> Verification:
    return Verification(False, count, f"line {number}: {why}", number)
