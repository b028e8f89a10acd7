"""The `transferkit` command: `main` wires the command modules, each a thin layer over `transferkit.api`.

Each module adds its subparsers and calls the API; user errors print one line and exit with code 2.
Progress lines are the API's `logging` records, printed on stderr by the one handler `core.logs.to_stderr`
installs for the command (INFO; `--quiet`: warnings only; `--verbose`: DEBUG); the error lines below are not
log lines and print whatever the level.
"""
from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
from typing import Any, Sequence

from ..core import fs, logs
from ..core.errors import UserError
from ..core.lock import forget_taken, outermost_taken
from . import augment, finetune, info, lm, plan, predict

REPORT_URL = "the transferkit issue tracker"
DEBUG_ENV = "TRANSFERKIT_DEBUG"
COMMAND_MODULES = (finetune, predict, info, lm, plan, augment)
# flags accepted anywhere on the line (before or after the command), taken out before argparse sees it
GLOBAL_FLAGS = ("--debug", "--quiet", "--verbose")


class Parser(argparse.ArgumentParser):
    """argparse's parser with its errors in one line, like every other bad value (`--lr abc` printed the whole
    usage block before the message); the command's --help is named instead. Subcommands inherit the class."""

    def error(self, message: str) -> Any:
        print(f"transferkit: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="transferkit", description="Pretrain, fine-tune, compare, evaluate and serve transformer "
                    "text models.")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an unexpected error (or set {DEBUG_ENV}=1)")
    parser.add_argument("--quiet", action="store_true", help="print warnings and errors only, no progress lines")
    parser.add_argument("--verbose", action="store_true", help="print debug lines too")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return parser


def _sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler or `kill`) stops a run the way Ctrl-C does: cleanly, resumable."""
    raise KeyboardInterrupt


def _interrupted() -> str:
    run = outermost_taken()
    if run is None:
        return "transferkit: interrupted"
    return f"transferkit: interrupted; {run.run_dir} continues with: {run.resume_hint}"


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone: a flush of it fails, or its pipe reports an error (the failed write may
    have emptied the buffer, so a flush alone can succeed)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is no file
        return False


def _internal_error(e: BaseException, debug: bool) -> int:
    """The last resort: one line, not a traceback, unless asked for (exit 1)."""
    if debug:
        raise e
    where = _origin(e)
    first = (str(e).strip().splitlines() or [""])[0][:300]
    print(f"transferkit: internal error: {type(e).__name__}: {first}{where} -- please report it to {REPORT_URL} "
          f"with the command; rerun with --debug (or {DEBUG_ENV}=1) for the traceback", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, quiet, verbose = (flag in argv for flag in GLOBAL_FLAGS)  # anywhere, not only before the command
    argv = [a for a in argv if a not in GLOBAL_FLAGS]
    if quiet and verbose:
        parser.error("--quiet and --verbose: choose one")
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options; argparse leaves those as unknown.
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    forget_taken()
    try:
        previous = signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not the main thread (main() called from a worker): leave signals alone
        previous = None
    try:
        with logs.stderr_while(level):  # child processes this command starts are handed the level (child_flags)
            return args.func(args)
    except UserError as e:
        print(f"transferkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted(), file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        if not _stdout_closed():  # a pipe to something else (a child, a socket): an error like any other
            return _internal_error(e, debug)
        # the reader of stdout went away (`transferkit models | head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush must not fail too
        return 141
    except Exception as e:  # the last resort: one line, not a traceback, unless asked for
        if fs.is_full_disk(e) and not debug:  # a library's own write (tokenizers, matplotlib) on a full disk
            print(f"transferkit: error: {fs.storage_error(e, getattr(e, 'filename', None))}", file=sys.stderr)
            return 2
        return _internal_error(e, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        from ..training import distributed
        distributed.shutdown()


def _origin(e: BaseException) -> str:
    """' (at file.py:123)' for the innermost frame of the exception, for the report."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ""
    return f" (at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno})"


if __name__ == "__main__":
    sys.exit(main())
