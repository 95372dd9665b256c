"""The audit chain: pure functions that seal records and verify a log (DESIGN §4).

Each record is one JSON object per line. `hash` is the SHA-256 of the record's canonical JSON
(sorted keys, no spaces, without `hash` and `mac`), and the record carries the previous record's
hash in `prev`, from a fixed genesis value. Editing, removing or reordering any record breaks the
chain at that line. Two things a bare hash chain cannot see are covered too:

- an attacker who rewrites the tail and recomputes every hash: each record also carries `mac`,
  an HMAC-SHA256 of its hash under the operator's audit key, which the attacker does not hold;
- a file cut after a whole record, or emptied, or deleted: the writer keeps a *head* (the last
  sequence number and hash, MACed) in a file beside the log and in an *anchor* outside the log's
  volume, and verification compares the log's end with them. A log checked against neither is
  *unanchored*: its tail could have been cut, so it does not verify.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

GENESIS = "0" * 64
EVENTS = (
    "requested",
    "notified",
    "decision_attempted",
    "decided",
    "expired",
    "cancelled",
    "receipt_issued",
    "claimed",
    "finished",
    "claim_attempted",
    "finish_attempted",
    "reminded",
    "escalated",
    "deleted",
    "chain_repaired",
    "chain_reset",
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SEQ = re.compile(r"[0-9]{1,19}")  # ASCII digits only (str.isdigit also takes '²')
# A head file or anchor is one short JSON object; a longer one is not read further.
MAX_HEAD_BYTES = 4096
# No record Greenlight writes comes near this (a request object is at most about 1.5 MiB); a
# longer line is read no further, by `verify` or by the operator loading its log.
MAX_RECORD_BYTES = 16 * 1024 * 1024
# Head MACs are computed over a different message than record MACs (which cover the bare hash),
# so a record's MAC can never be presented as a head's.
_HEAD_MAC_CONTEXT = "greenlight-audit-head"


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
    """Where the chain ends: the last record's `seq` and `hash` (seq 0: no record yet).

    `mac` is the HMAC-SHA256 of `greenlight-audit-head:<seq>:<hash>` under the audit key, so
    nobody without the key can move a head to where a cut log ends.
    """

    seq: int
    hash: str
    mac: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"seq": self.seq, "hash": self.hash}
        if self.mac is not None:
            data["mac"] = self.mac
        return data


class HeadError(ValueError):
    """A head or anchor that cannot be read as one (not JSON, missing or mistyped fields)."""


def head_mac(key: bytes, seq: int, digest: str) -> str:
    message = f"{_HEAD_MAC_CONTEXT}:{seq}:{digest}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def make_head(seq: int, digest: str, key: bytes | None) -> Head:
    return Head(seq, digest, head_mac(key, seq, digest) if key is not None else None)


def head_is_authentic(head: Head, key: bytes) -> bool:
    return head.mac is not None and hmac.compare_digest(
        head.mac, head_mac(key, head.seq, head.hash)
    )


def parse_head(data: object, *, source: str = "head") -> Head:
    """A head from its JSON form `{"seq": N, "hash": "<64 hex>", "mac": "<64 hex>"}`.

    Raises HeadError naming `source` and the field that is wrong.
    """
    if not isinstance(data, Mapping):
        raise HeadError(f"{source} is not a JSON object with seq and hash")
    seq, digest, mac = data.get("seq"), data.get("hash"), data.get("mac")
    if isinstance(seq, str) and _SEQ.fullmatch(seq):
        seq = int(seq)  # a ConfigMap anchor keeps every value as a string
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        raise HeadError(f"{source}: seq must be a whole number >= 0, not {seq!r}")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise HeadError(f"{source}: hash must be 64 lowercase hex digits, not {digest!r}")
    if seq == 0 and digest != GENESIS:
        raise HeadError(f"{source}: seq 0 must carry the genesis hash (64 zeros)")
    if mac is not None and (not isinstance(mac, str) or not _HEX64.fullmatch(mac)):
        raise HeadError(f"{source}: mac must be 64 lowercase hex digits, not {mac!r}")
    return Head(seq, digest, mac)


def parse_head_text(text: str, *, source: str = "head") -> Head:
    try:
        data = json.loads(text)
    except ValueError:
        raise HeadError(f"{source} is not valid JSON") from None
    return parse_head(data, source=source)


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    message: str
    bad_line: int | None = None  # 1-based line number of the first bad record
    last: Head | None = None
    missing: int | None = None  # the first sequence number a truncated log lacks


UNANCHORED = "unanchored: no head file or anchor to compare the log's end with"


def verify(
    lines: Iterable[str],
    *,
    key: bytes | None = None,
    head: Head | None = None,
    anchor: Head | None = None,
    require_anchor: bool = False,
    after: Head | None = None,
) -> Verification:
    """Check a whole log. The first problem found is reported with its line number.

    `head` is the head file, written after every append: the log must end exactly there.
    `anchor` is the copy outside the volume, updated shortly after each write: the log must
    reach it (it may have gone on since), and the record at its `seq` must have its `hash`.
    With `key`, both must carry a valid MAC. With `require_anchor`, a log checked against
    neither fails as unanchored. With `after`, `lines` are the part of a log that follows the
    record `after` names and must continue its chain (line numbers count from the first of them).
    """
    prev, count, last = GENESIS, 0, None
    if after is not None:
        prev, count, last = after.hash, after.seq, Head(after.seq, after.hash)
    at_anchor: str | None = GENESIS if anchor is not None and anchor.seq == 0 else None
    resets: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            return _bad(number, count, "empty line inside the log")
        if not line.endswith("\n") and len(line) <= MAX_RECORD_BYTES:
            return _bad(number, count, "last record is cut short (the file was truncated)")
        seq = count + 1
        try:
            record, digest = read_record(line, seq=seq, prev=prev, key=key)
        except RecordError as exc:
            return _bad(number, count, str(exc))
        if record.get("event") == "chain_reset":
            resets.append(seq)
        prev, count, last = digest, count + 1, Head(seq, digest)
        if anchor is not None and seq == anchor.seq:
            at_anchor = digest
    for name, reference in (("head file", head), ("anchor", anchor)):
        if reference is not None and key is not None and not head_is_authentic(reference, key):
            why = "carries no MAC" if reference.mac is None else "MAC does not match the audit key"
            return Verification(False, count, f"the {name} {why} (forged or replaced)", None, last)
    ends = last.seq if last else 0
    for name, reference in (("head file", head), ("anchor", anchor)):
        if reference is not None and ends < reference.seq:
            return Verification(
                False,
                count,
                f"log ends at record {ends} but the {name} records {reference.seq}: "
                f"the log was truncated (record {ends + 1} is the first one missing)",
                count + 1,
                last,
                ends + 1,
            )
    if anchor is not None and at_anchor != anchor.hash:
        return Verification(
            False,
            count,
            f"record {anchor.seq} does not match the anchor (the log was replaced)",
            anchor.seq or None,
            last,
        )
    if head is not None:
        if ends > head.seq:
            return Verification(
                False,
                count,
                f"record {head.seq + 1} and later were appended "
                "outside the operator (beyond the head file)",
                head.seq + 1,
                last,
            )
        if (last.hash if last else GENESIS) != head.hash:
            return Verification(
                False, count, "last record does not match the head file", count or None, last
            )
    if require_anchor and head is None and anchor is None:
        return Verification(False, count, UNANCHORED, None, last)
    message = f"{count} records, chain intact"
    if resets:
        message += f" (reset by an admin at record {', '.join(map(str, resets))})"
    return Verification(True, count, message, None, last)


class RecordError(ValueError):
    """A line that is not the next record of the chain (the message says what is wrong)."""


def read_record(
    line: str | bytes, *, seq: int, prev: str, key: bytes | None
) -> tuple[dict[str, Any], str]:
    """The record on one line of a log and its hash, when it is record `seq` of the chain
    (`check_record`); raises RecordError naming what is wrong. `verify` and the operator loading
    its log both read every line with this."""
    if len(line) > MAX_RECORD_BYTES:
        raise RecordError(f"longer than {MAX_RECORD_BYTES} bytes (no record is)")
    try:
        record = json.loads(line)
    except ValueError:
        raise RecordError("not valid JSON (edited or truncated)") from None
    return record, check_record(record, seq=seq, prev=prev, key=key)


def check_record(record: object, *, seq: int, prev: str, key: bytes | None) -> str:
    """The hash of `record` when it is record `seq` of a chain whose last hash is `prev`, sealed
    with `key`'s MAC when there is a key; raises RecordError naming what is wrong."""
    if not isinstance(record, dict):
        raise RecordError("not a JSON object")
    if record.get("seq") != seq:
        raise RecordError(
            f"sequence {record.get('seq')} where {seq} was expected "
            "(a record was removed, inserted or reordered)"
        )
    if record.get("prev") != prev:
        raise RecordError(
            "does not chain to the record before it (a record was removed or reordered)"
        )
    digest = hashlib.sha256(canonical(record)).hexdigest()
    if record.get("hash") != digest:
        raise RecordError("content does not match its hash (the record was edited)")
    if key is not None:
        expected = hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(str(record.get("mac", "")), expected):
            raise RecordError("MAC does not match the audit key (forged record)")
    return digest


def read_lines(handle: IO[str]) -> Iterator[str]:
    """The lines of an open text file, none read past MAX_RECORD_BYTES (+1) characters."""
    while line := handle.readline(MAX_RECORD_BYTES + 1):
        yield line


def _bad(number: int, count: int, why: str) -> Verification:
    return Verification(False, count, f"line {number}: {why}", number)
