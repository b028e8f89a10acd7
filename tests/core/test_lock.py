"""`core.lock.exclusive`: a short critical section that another process waits for."""
from __future__ import annotations

import subprocess
import sys

import pytest

from transferkit.core.lock import exclusive

# Another process tries the same lock without waiting: exit 1 while it is held, 0 once it is free.
PROBE = """
import fcntl, sys
with open(sys.argv[1], "a+b") as f:
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(1)
"""


def _other_process_gets(path) -> bool:
    return subprocess.run([sys.executable, "-c", PROBE, str(path)]).returncode == 0


def test_another_process_waits_while_the_block_runs(tmp_path):
    path = tmp_path / "store.lock"
    with exclusive(path):
        assert not _other_process_gets(path)
    assert _other_process_gets(path)


def test_an_unwritable_place_is_the_oserror_of_opening_it(tmp_path):
    with pytest.raises(OSError):
        with exclusive(tmp_path / "missing-folder" / "x.lock"):
            pass
