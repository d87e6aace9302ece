"""Durations as the spec writes them: 8760h, 365d, 10y (a year is 365 days)."""

import re
from datetime import timedelta

_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "y": timedelta(days=365)}
_DURATION = re.compile(r"^(-?\d+)([hdy])$")
# Far beyond any sane validity, and far enough from datetime's year 9999 that date arithmetic on a
# certificate's notAfter cannot overflow.
MAX_DURATION = timedelta(days=100 * 365)
_RULE = "a whole number of hours, days or years: 8760h, 365d, 10y"


def parse_duration(text: object) -> timedelta:
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration; write {_RULE}")
    amount = int(m.group(1))
    if amount <= 0:
        raise ValueError(f"{text!r} is not longer than zero; write {_RULE}")
    if amount > MAX_DURATION // _UNITS[m.group(2)]:
        raise ValueError(f"{text!r} is longer than 100y, the longest allowed")
    return amount * _UNITS[m.group(2)]


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling, the inverse of parse_duration."""
    hours = int(value.total_seconds() // 3600)
    if hours % (365 * 24) == 0:
        return f"{hours // (365 * 24)}y"
    if hours % 24 == 0:
        return f"{hours // 24}d"
    return f"{hours}h"
