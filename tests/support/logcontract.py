"""The operator's log contract (docs/telemetry.md, "Logs"), checked line by line.

Every line a Greenlight process prints must be one JSON object with `timestamp` (RFC 3339 UTC),
`level` (DEBUG/INFO/WARN/ERROR), `message`, `workflow_id`, `task_id`, `trace_id` and `span_id`
(empty strings when unknown, never missing), and no secret may appear anywhere in the text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

LEVELS = frozenset({"DEBUG", "INFO", "WARN", "ERROR"})
REQUIRED = ("timestamp", "level", "message", "workflow_id", "task_id", "trace_id", "span_id")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_TRACE_ID = re.compile(r"(|[0-9a-f]{32})")
_SPAN_ID = re.compile(r"(|[0-9a-f]{16})")


def check_lines(lines: Sequence[str], secrets: Iterable[str], source: str) -> list[dict[str, Any]]:
    """Parse and check every line; fail naming the first offending line. Returns the records."""
    secrets = [s for s in secrets if s]
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        where = f"{source}:{number}"
        leaked = [s[:6] + "…" for s in secrets if s in line]
        assert not leaked, f"{where} contains a secret ({leaked})"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"{where} is not JSON ({exc}): {line[:300]}") from None
        assert isinstance(record, dict), f"{where} is not a JSON object: {line[:300]}"
        missing = [key for key in REQUIRED if key not in record]
        assert not missing, f"{where} lacks {missing}: {line[:300]}"
        assert record["level"] in LEVELS, f"{where} has level {record['level']!r}"
        assert _TIMESTAMP.fullmatch(str(record["timestamp"])), f"{where}: {record['timestamp']!r}"
        assert isinstance(record["message"], str), f"{where}: message is not a string"
        for key in ("workflow_id", "task_id"):
            assert isinstance(record[key], str), f"{where}: {key} is not a string"
        assert _TRACE_ID.fullmatch(str(record["trace_id"])), f"{where}: {record['trace_id']!r}"
        assert _SPAN_ID.fullmatch(str(record["span_id"])), f"{where}: {record['span_id']!r}"
        records.append(record)
    return records
