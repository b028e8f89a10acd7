"""transferkit's progress lines go through Python's `logging`: every module logs to
`logging.getLogger(__name__)`, all under the `transferkit` logger.

The CLI calls `to_stderr()` once: one handler that prints each message as it is (the lines users see on
stderr), from rank 0 alone when several processes train (the others would repeat every line), at INFO
(`--verbose`: DEBUG, `--quiet`: warnings only). The Python API configures nothing: a notebook or a server
decides where the lines go (`logging.basicConfig(level=logging.INFO)`, or `transferkit.log_to_stderr()` for the
CLI's own lines); without either nothing is shown (the package's NullHandler keeps Python's last-resort
handler from printing warnings a library user did not ask for).

Where a caller needs other lines than the plain flow gives, it says so through logging too: `held` keeps a
block's records back until `release` (a run shows its data summary only once every check passed; a line
logged with `extra=NOW` passes at once), `quiet` hushes a block (a search's trials), `child_flags` hands the
level on to a `transferkit` child process, and `stderr_while` is the CLI's `to_stderr` for one command.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

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


@contextlib.contextmanager
def stderr_while(level: int = logging.INFO) -> Iterator[None]:
    """`to_stderr(level)` for the block, then the `transferkit` logger as it was: the CLI's `main` called from
    a program (or a test) leaves that program's logging as it found it."""
    logger = logging.getLogger(ROOT)
    handlers, old_level, propagate = list(logger.handlers), logger.level, logger.propagate
    to_stderr(level)
    try:
        yield
    finally:
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(old_level)


# `logger.info(msg, extra=NOW)`: a line `held` lets through at once (a download the user is waiting on).
NOW = {"now": True}


class _Keep(logging.Handler):
    """What `held` puts on the `transferkit` logger: keeps records, shows those marked NOW through the
    handlers it stands in for."""

    def __init__(self, logger: logging.Logger, handlers: list[logging.Handler], propagate: bool) -> None:
        super().__init__()
        self.logger, self.handlers, self.propagate = logger, handlers, propagate
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "now", False):
            self.records.append(record)
            return
        kept = self.logger.handlers, self.logger.propagate
        self.logger.handlers, self.logger.propagate = self.handlers, self.propagate
        try:
            self.logger.callHandlers(record)
        finally:
            self.logger.handlers, self.logger.propagate = kept


@contextlib.contextmanager
def held() -> Iterator[list[logging.LogRecord]]:
    """Inside, transferkit's records are kept in the list yielded instead of being shown (but those logged
    with `extra=NOW`); `release(records)` shows them later, or the caller drops them (an error came first).
    What is held back is what the `transferkit` logger's handlers and those above it (the CLI's, an
    application's root handlers, pytest's) would have shown."""
    logger = logging.getLogger(ROOT)
    keep = _Keep(logger, logger.handlers, logger.propagate)
    logger.handlers, logger.propagate = [keep], False
    try:
        yield keep.records
    finally:
        logger.handlers, logger.propagate = keep.handlers, keep.propagate


def release(records: list[logging.LogRecord]) -> None:
    """Show records `held` back, to the handlers they were held back from."""
    logger = logging.getLogger(ROOT)
    for record in records:
        logger.callHandlers(record)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Inside, transferkit logs errors only: a search runs whole fine-tuning runs as trials, whose lines would
    bury its own; splits read again to check or score something were summarised when their run trained."""
    root = logging.getLogger(ROOT)
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def child_flags(quiet_ok: bool = True) -> list[str]:
    """The `transferkit` command-line flags that give a child process this process's level: `--verbose` when
    DEBUG lines are on, `--quiet` when not even INFO lines are (unless `quiet_ok` is False: a child whose whole
    output is kept in a file), nothing at INFO."""
    logger = logging.getLogger(ROOT)
    if logger.isEnabledFor(logging.DEBUG):
        return ["--verbose"]
    if quiet_ok and not logger.isEnabledFor(logging.INFO):
        return ["--quiet"]
    return []
