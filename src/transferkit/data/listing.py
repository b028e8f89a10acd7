"""Short forms of lists and values for one-line error messages and log lines.

A `UserError` must stay one readable line even when the data has 1,000 classes, 5,000
columns or a 2 KB label: `summarise` shows the first few items and counts the rest, and
`clip` shortens one value.
"""
from __future__ import annotations

from typing import Any, Iterable

MAX_ITEMS = 5
MAX_CHARS = 40


def clip(value: Any, width: int = MAX_CHARS) -> str:
    """`str(value)` cut to `width` characters (an ellipsis marks the cut)."""
    s = str(value)
    return s if len(s) <= width else s[:width - 3] + "..."


def summarise(items: Iterable[Any], limit: int = MAX_ITEMS, *, quote: bool = False, sep: str = ", ",
              empty: str = "(none)") -> str:
    """The first `limit` items joined by `sep`, then '... and N more'; each item clipped.

    `quote=True` shows each item as its repr (so 'a b' and 1 read apart from the prose).
    """
    items = list(items)
    if not items:
        return empty
    shown = [clip(repr(x) if quote else x) for x in items[:limit]]
    rest = len(items) - len(shown)
    return sep.join(shown) + (f" ... and {rest:,} more" if rest else "")
