"""The `spec.timeout` grammar and its 1m..7d bounds (the CRD enforces the same at the API
server)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from greenlight.core.durations import DEFAULT_TIMEOUT, MAX_TIMEOUT, MIN_TIMEOUT, parse_timeout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1m", timedelta(minutes=1)),
        ("60s", timedelta(minutes=1)),
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h0m30s", timedelta(hours=1, seconds=30)),
        ("1d", timedelta(days=1)),
        ("7d", timedelta(days=7)),
        ("168h", timedelta(days=7)),
        ("10080m", timedelta(days=7)),
    ],
)
def test_valid_timeout_parses_to_its_duration(text: str, expected: timedelta) -> None:
    assert parse_timeout(text) == expected


@pytest.mark.parametrize("text", ["0s", "30s", "59s", "0m", "0d", "8d", "169h", "167h61m"])
def test_timeout_outside_one_minute_to_seven_days_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=rf"timeout '{text}' must be between 1m and 7d"):
        parse_timeout(text)


@pytest.mark.parametrize(
    "text", ["", "abc", "1", "1w", "1.5h", "-1h", " 1h", "1h ", "1d2h", "1m1h", "1000d", "1H"]
)
def test_timeout_that_is_not_a_duration_is_refused_with_its_value(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration like 30m, 2h, 1h30m or 3d") as err:
        parse_timeout(text)

    assert repr(text) in str(err.value)


def test_default_timeout_is_one_hour_and_within_bounds() -> None:
    assert parse_timeout(DEFAULT_TIMEOUT) == timedelta(hours=1)
    assert timedelta(minutes=1) == MIN_TIMEOUT
    assert timedelta(days=7) == MAX_TIMEOUT
