"""transferkit's progress lines go through Python's `logging`: every module logs to
`logging.getLogger(__name__)`, all under the `transferkit` logger.

The CLI calls `to_stderr()` once: one handler that prints each message as it is (the lines users see on
stderr), from rank 0 alone when several processes train (the others would repeat every line), at INFO
(`--verbose`: DEBUG, `--quiet`: warnings only). The Python API configures nothing: a notebook or a server
decides where the lines go (`logging.basicConfig(level=logging.INFO)`, or `transferkit.log_to_stderr()` for the
CLI's own lines); without either, Python shows warnings only.
"""
from __future__ import annotations

import logging
import os
import sys

ROOT = "transferkit"


class _RankZero(logging.Filter):
    """Under torchrun every process runs the same code; rank 0 alone speaks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return os.environ.get("RANK", "0") in ("0", "")


class _StderrHandler(logging.StreamHandler):
    """The one handler `to_stderr` installs (known by its type, so a second call replaces it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # the stderr of now (pytest's capture, a redirected stream), not of install time
        super().emit(record)


def to_stderr(level: int = logging.INFO) -> None:
    """Print transferkit's log lines to stderr, one message per line with no prefix, from rank 0."""
    logger = logging.getLogger(ROOT)
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_RankZero())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # an application's root handler would print every line a second time
