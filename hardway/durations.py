"""Durations as the spec writes them: 8760h, 365d, 10y (a year is 365 days)."""

import re
from datetime import timedelta

_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "y": timedelta(days=365)}
_DURATION = re.compile(r"^(-?\d+)([hdy])$")


def parse_duration(text: object) -> timedelta:
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration; write a whole number of hours, days or years: 8760h, 365d, 10y")
    amount = int(m.group(1))
    if amount <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return amount * _UNITS[m.group(2)]


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling, the inverse of parse_duration."""
    hours = int(value.total_seconds() // 3600)
    if hours % (365 * 24) == 0:
        return f"{hours // (365 * 24)}y"
    if hours % 24 == 0:
        return f"{hours // 24}d"
    return f"{hours}h"
