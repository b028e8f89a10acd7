"""One run directory, one writer: an exclusive lock file with the owner's pid.

`RUN_DIR/.lock` is created with O_EXCL, so of two processes pointed at the same directory
exactly one gets it; the other exits with a message naming the owner. The file records the pid
and the process's start time (pids are reused): a lock whose process is gone, or whose pid now
belongs to a process started later, is stale and is taken over. A clean exit removes it; a killed
run leaves it behind, and the next `--resume` recognises it as stale.

The locks a process took are also where the CLI learns which run an interrupt stopped
(`outermost_taken()`), so its message names the real run directory and how to resume it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import UserError

LOCK_FILE = ".lock"
_held: list["RunLock"] = []  # locks held by this process, innermost last
_taken: list["RunLock"] = []  # every lock this process took, latest last (the run an interrupt stopped)


def _start_time(pid: int) -> float | None:
    """The start time of process `pid`, or None when there is no such process."""
    try:
        import psutil
        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - NoSuchProcess, AccessDenied, ZombieProcess...
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0.0  # alive, owned by someone else
        return 0.0


def _owner_alive(info: dict[str, Any]) -> bool:
    if info.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process: we cannot tell, so honour it
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    started = _start_time(pid)
    if started is None:
        return False
    recorded = info.get("started")
    # A pid reused by a process that started after the lock was written is not the owner.
    return not (isinstance(recorded, (int, float)) and started and started > recorded + 1.0)


def read_lock(run_dir: Path | str) -> dict[str, Any] | None:
    """The lock's owner record, or None when there is none; a garbled lock counts as stale ({})."""
    path = Path(run_dir) / LOCK_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def live_owner(run_dir: Path | str) -> dict[str, Any] | None:
    """The owner record if another live process holds the directory's lock."""
    info = read_lock(run_dir)
    if info and info.get("pid") != os.getpid() and _owner_alive(info):
        return info
    return None


def _describe(info: dict[str, Any]) -> str:
    when = info.get("started")
    since = time.strftime(" since %H:%M:%S", time.localtime(when)) if isinstance(when, (int, float)) else ""
    cmd = f" ({info['command']})" if info.get("command") else ""
    return f"process {info.get('pid')}{since}{cmd}"


class RunLock:
    """`with RunLock(run_dir, "finetune"):` — exclusive use of a run directory for one process."""

    def __init__(self, run_dir: Path | str, command: str, resume_hint: str | None = None) -> None:
        self.run_dir, self.command = Path(run_dir), command
        self.resume_hint = resume_hint or f"transferkit {command} --resume {self.run_dir}"
        self.path = self.run_dir / LOCK_FILE
        self.stale_owner: dict[str, Any] | None = None

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid()) or time.time(),
                  "command": self.command}
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = read_lock(self.run_dir)
                if info is None:
                    continue  # released meanwhile
                if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
                    break  # this process already holds it (an API call inside another)
                if info and _owner_alive(info):
                    raise UserError(f"run directory {self.run_dir} is in use by {_describe(info)}; wait for it "
                                    f"to finish or stop it (its lock: {self.path})") from None
                self.stale_owner = info
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
            break
        else:
            raise UserError(f"run directory {self.run_dir}: could not take its lock {self.path}")
        _held.append(self)
        _taken.append(self)
        return self

    def release(self) -> None:
        if self in _held:
            _held.remove(self)
            info = read_lock(self.run_dir)
            if info is not None and info.get("pid") == os.getpid() and self not in _held and \
                    not any(h.path == self.path for h in _held):
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def active() -> RunLock | None:
    """The innermost run lock this process holds."""
    return _held[-1] if _held else None


def outermost_taken() -> RunLock | None:
    """The first lock of this process: the run the user started (compare holds its folder, then its runs)."""
    return _taken[0] if _taken else None
