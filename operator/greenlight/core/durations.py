"""The `spec.timeout` and `spec.validFor` grammars, shared by the CRD's CEL rules and the operator.

`timeout`: a whole number of days (`3d`), or Go-style hours/minutes/seconds (`2h`, `1h30m`, `90s`),
between 1 minute and 7 days. `validFor` (how long a receipt may be used after approval): Go-style
hours/minutes/seconds between 1 minute and 24 hours. The CRD refuses anything else at the API
server; these parsers are what the operator (and the CLI, before it sends) uses to turn the
strings into durations.
"""

from __future__ import annotations

import re
from datetime import timedelta

DEFAULT_TIMEOUT = "1h"
MIN_TIMEOUT = timedelta(minutes=1)
MAX_TIMEOUT = timedelta(days=7)
DEFAULT_VALID_FOR = "15m"
MIN_VALID_FOR = timedelta(minutes=1)
MAX_VALID_FOR = timedelta(hours=24)

_PATTERN = re.compile(
    r"^(?:(?P<d>[0-9]{1,3})d|(?:(?P<h>[0-9]{1,6})h)?(?:(?P<m>[0-9]{1,6})m)?(?:(?P<s>[0-9]{1,6})s)?)$"
)


def parse_timeout(text: str) -> timedelta:
    """Parse a timeout such as `30m`; raise ValueError naming the value when it is not valid."""
    match = _PATTERN.match(text)
    if not text or match is None:
        raise ValueError(f"timeout {text!r} is not a duration like 30m, 2h, 1h30m or 3d")
    parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    value = timedelta(
        days=parts.get("d", 0),
        hours=parts.get("h", 0),
        minutes=parts.get("m", 0),
        seconds=parts.get("s", 0),
    )
    if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise ValueError(f"timeout {text!r} must be between 1m and 7d")
    return value


def parse_valid_for(text: str) -> timedelta:
    """Parse a `validFor` such as `15m`; raise ValueError naming the value when it is not valid."""
    match = _PATTERN.match(text)
    if not text or match is None or match.group("d") is not None:
        raise ValueError(f"validFor {text!r} is not a duration like 15m, 1h or 1h30m")
    parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    value = timedelta(hours=parts.get("h", 0), minutes=parts.get("m", 0), seconds=parts.get("s", 0))
    if not MIN_VALID_FOR <= value <= MAX_VALID_FOR:
        raise ValueError(f"validFor {text!r} must be between 1m and 24h")
    return value


def parse_duration(
    text: str, what: str, *, minimum: timedelta, maximum: timedelta, days: bool
) -> timedelta:
    """Parse a duration in the same grammar, with the bounds and the `d` unit of one field.

    `what` names the field in the error (`reminders.every '5x' is not a duration ...`); with
    `days` false only hours, minutes and seconds are accepted (so the CRD can check the value
    with CEL's `duration()`).
    """
    match = _PATTERN.match(text)
    if not text or match is None or (not days and match.group("d") is not None):
        examples = "30m, 2h, 1h30m or 3d" if days else "15m, 1h or 1h30m"
        raise ValueError(f"{what} {text!r} is not a duration like {examples}")
    parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    value = timedelta(
        days=parts.get("d", 0),
        hours=parts.get("h", 0),
        minutes=parts.get("m", 0),
        seconds=parts.get("s", 0),
    )
    if not minimum <= value <= maximum:
        low, high = format_duration(minimum, days=days), format_duration(maximum, days=days)
        raise ValueError(f"{what} {text!r} must be between {low} and {high}")
    return value


def format_duration(value: timedelta, *, days: bool = True) -> str:
    """The shortest spelling the parsers above read back (`3d`, `36h`, `1h30m`, `90s`)."""
    seconds = int(value.total_seconds())
    if days and seconds > 0 and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
    return text or "0s"
