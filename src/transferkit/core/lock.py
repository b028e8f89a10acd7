"""One run directory, one writer: an exclusive lock on `RUN_DIR/.lock`, held for the life of the run.

The lock is an OS file lock (`flock`) on `.lock`, so of two processes pointed at the same
directory exactly one holds it, and the kernel releases it when its process ends in any way —
a clean exit, an exception, SIGKILL — so a lock left behind by a killed run is stale by
construction and the next run (or `--resume`) simply takes it. The file also records the owner's
pid, command and start time, which the refused process names. After taking the lock the holder
checks that `.lock` is still the file it locked (a releasing owner unlinks it), so two processes
can never hold locks on two different files of the same name.

Only the main process of a multi-process run (rank 0) takes the lock: the others work in the
same directory under it.

The locks a process took are also where the CLI learns which run an interrupt stopped
(`outermost_taken()`), so its message names the real run directory and how to resume it.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock degrades to a record of the owner
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
_held: list["RunLock"] = []  # locks held by this process, innermost last
_taken: list["RunLock"] = []  # every lock this process took since `forget_taken`, latest last


def _try_flock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def exclusive(path: Path | str) -> Iterator[None]:
    """A blocking exclusive lock on the file `path` (created if missing) for as long as the block runs: another
    process asking for it waits. For short critical sections (building a run's cached backend, creating a shared
    tracking store), not for a run's life (that is `RunLock`). Without flock (Windows) the block runs unlocked.
    An unwritable place raises the OSError of opening it."""
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def read_lock(run_dir: Path | str) -> dict[str, Any] | None:
    """The owner record in the lock file, or None when there is none (or it is unreadable)."""
    try:
        info = json.loads((Path(run_dir) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def live_owner(run_dir: Path | str) -> dict[str, Any] | None:
    """The owner record when another process holds the directory's lock now, else None."""
    path = Path(run_dir) / LOCK_FILE
    if any(h.path == path for h in _held):
        return None  # this process itself
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _try_flock(fd):
            return None  # nobody holds it: a stale file from a run that ended
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return read_lock(run_dir) or {}


def in_use(run_dir: Path | str, info: dict[str, Any]) -> UserError:
    """The one-line refusal naming the process that holds `run_dir`."""
    when = info.get("started")
    since = time.strftime(" since %H:%M:%S", time.localtime(when)) if isinstance(when, (int, float)) else ""
    host = f" on {info['host']}" if info.get("host") not in (None, socket.gethostname()) else ""
    cmd = f" ({info['command']})" if info.get("command") else ""
    return UserError(f"run directory {run_dir} is in use by process {info.get('pid', '?')}{host}{since}{cmd}; "
                     f"wait for it to finish or stop it")


class RunLock:
    """`with RunLock(run_dir, "finetune"):` — exclusive use of a run directory for one process."""

    def __init__(self, run_dir: Path | str, command: str, resume_hint: str | None = None) -> None:
        self.run_dir, self.command = Path(run_dir), command
        self.resume_hint = resume_hint or f"transferkit {command} --resume {self.run_dir}"
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if int(os.environ.get("RANK", "0") or 0) != 0:
            return self  # a worker of a multi-process run: rank 0 holds the directory
        if any(h.path == self.path for h in _held):
            return self  # already held by this process (an API call inside another)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(10):  # retried when the owner released between our open and our lock
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            if not _try_flock(fd):
                os.close(fd)
                if attempt < 3 and not read_lock(self.run_dir):  # maybe only another process's brief probe
                    time.sleep(0.05)
                    continue
                raise in_use(self.run_dir, read_lock(self.run_dir) or {})
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # we locked a file its owner had just unlinked: take the new one
        else:
            raise UserError(f"run directory {self.run_dir}: could not take its lock {self.path}")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": self.command}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        self._fd = fd
        _held.append(self)
        _taken.append(self)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        _held.remove(self)
        try:
            self.path.unlink(missing_ok=True)  # unlink while still locked, so no one locks the dead file
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def outermost_taken() -> RunLock | None:
    """The first lock of this process: the run the user started (compare holds its folder, then its runs)."""
    return _taken[0] if _taken else None


def forget_taken() -> None:
    """Start a new command's record (the CLI calls this first, so an interrupt names this command's run)."""
    _taken.clear()
