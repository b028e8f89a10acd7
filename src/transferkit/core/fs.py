"""The one atomic writer: every file and folder transferkit writes goes through here.

A file is written beside its final name and renamed over it (`os.replace`), so a reader, or a
run killed halfway, never sees half a file. JSON is written strictly: a non-finite float becomes
`null`, because `NaN` and `Infinity` are not JSON and most readers reject them. A full disk or a
read-only filesystem becomes a one-line `UserError` naming the path.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from .errors import UserError

# errno values that mean "the disk or filesystem refuses the write": the user can fix these.
_STORAGE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def finite_json(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (numpy scalars and tuples included)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalar
        return finite_json(obj.item())
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` that never writes NaN or Infinity (they become null)."""
    return json.dumps(finite_json(obj), allow_nan=False, **kwargs)


# Rust libraries (safetensors, tokenizers) raise their own exception types, or a bare Exception, whose message
# carries the OS error: "I/O error: No space left on device (os error 28)".
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _errno(e: BaseException | None) -> int | None:
    """The errno of a refused write, however the library that made it wrapped it (`raise ... from` causes included;
    not an error merely handled before this one was raised, `__context__`)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e.errno
        found = _RUST_OS_ERROR.search(str(e))
        if found:
            return int(found.group(1))
        e = e.__cause__
    return None


def _why(e: BaseException) -> str:
    code = _errno(e)
    return {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
            errno.EROFS: "the filesystem is read-only"}.get(
        code, getattr(e, "strerror", None) or (os.strerror(code) if code else type(e).__name__))


def storage_error(e: BaseException, path: Path | str | None) -> UserError:
    """The one-line message for a write the filesystem refused (`path` None: a library's write, place unknown)."""
    if path is None:
        return UserError(f"a write was refused: {_why(e)}; free space or fix the folder's permissions, then run the "
                         "command again (an interrupted run continues with --resume)")
    return UserError(f"cannot write {path}: {_why(e)}")


def is_full_disk(e: BaseException) -> bool:
    """Whether `e` is a disk or filesystem that takes no more writes (full, over quota, read-only): the cases a
    library's own write is reported as, where the failing path is not known (not a permission problem)."""
    return _errno(e) in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def is_storage_error(e: BaseException) -> bool:
    """Whether `e` is the filesystem refusing a write (full, over quota, read-only, not permitted), as an
    OSError or as a library's own exception that carries the OS error."""
    return _errno(e) in _STORAGE_ERRORS


def write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` through a temporary name; the file appears whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if is_storage_error(e):
            raise storage_error(e, path) from None
        raise


def write_text(path: Path | str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, obj: Any, indent: int | None = 1) -> None:
    write_text(path, dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def append_line(path: Path | str, text: str) -> None:
    """Append one line (a JSONL record); a refused write is a UserError."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")
    except OSError as e:
        if is_storage_error(e):
            raise storage_error(e, path) from None
        raise


def replace(tmp: Path | str, final: Path | str) -> None:
    """Move a finished temporary file or folder to its final name in one atomic step (the last step of
    every write: a reader, or a run killed at any instant, sees the old file or the new one, never half)."""
    try:
        os.replace(tmp, final)
    except OSError as e:
        raise storage_error(e, final) if is_storage_error(e) else e


def write_folder(final: Path | str, write: Callable[[Path], Any]) -> None:
    """Let `write(tmp)` fill a folder beside `final`, then swap it in: a crash never leaves half a folder."""
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except Exception as e:  # noqa: BLE001 - whatever `write` raised, no half folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        if is_storage_error(e):
            raise storage_error(e, final) from None
        raise


def check_writable_dir(path: Path | str, what: str = "output directory") -> None:
    """Fail now, not after training, when `path` cannot become a writable folder.

    Walks up to the first existing ancestor: it must be a folder we may write in (and `path`
    itself, if it exists, a folder). A probe file catches read-only mounts that `os.access` misses.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder")
    probe_in = path
    while not probe_in.exists():
        parent = probe_in.parent
        if parent == probe_in:
            break
        probe_in = parent
    if not probe_in.is_dir():
        raise UserError(f"{what} {path}: {probe_in} is a file, not a folder")
    probe = probe_in / f".transferkit-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{what} {path} is not writable ({_why(e)})") from None


def check_output_file(path: Path | str, suffixes: tuple[str, ...]) -> None:
    """An output file name must have a known suffix, not be a folder, and lie in an existing writable folder."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"output file {path}: use a name ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise UserError(f"output file {path} is a folder")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output file {path}: folder {parent} does not exist")
    check_writable_dir(parent, what="output file folder")
