"""Sizes and durations as people write them ('16GB', '3h'), read into bytes and seconds, checked."""
from __future__ import annotations

import math
import re

from .errors import UserError

_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*", re.I)
_SIZE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
               "tib": 2**40}
_TIME = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?|d|days?)?\s*", re.I)
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_memory(value: str | int | float, what: str = "--memory") -> int:
    """'8GB', '16 GiB', '512MB' or a number of bytes -> bytes (GB are read as GiB, as tools report them)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), "b"
    else:
        m = _SIZE.fullmatch(str(value))
        if not m:
            raise UserError(f"{what} {value!r}: expected a size such as 8GB, 512MB or 16GiB")
        number, unit = float(m.group(1)), (m.group(2) or "gb").lower()
    if unit in ("kb", "mb", "gb", "tb"):  # what people mean by "a 16 GB GPU"
        unit = unit[0] + "ib"
    size = number * _SIZE_UNITS[unit]
    if not math.isfinite(size) or not 2**20 <= size <= 2**50:
        raise UserError(f"{what} {value!r}: must be between 1 MB and 1 PB")
    return int(size)


def parse_duration(value: str | int | float, what: str = "--time-budget") -> float:
    """'3h', '90m', '2 days', '45s' or a number of seconds -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _TIME.fullmatch(str(value))
        if not m:
            raise UserError(f"{what} {value!r}: expected a duration such as 3h, 90m or 2d")
        seconds = float(m.group(1)) * _TIME_UNITS[(m.group(2) or "s")[0].lower()]
    if not math.isfinite(seconds) or not 1 <= seconds <= 365 * 86400:
        raise UserError(f"{what} {value!r}: must be between 1 second and 365 days")
    return seconds
