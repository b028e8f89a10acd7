"""Content hashes of the data a `DataConfig` names, so a run can tell when its data changed.

`data_fingerprints(cfg)` maps every source the config names (`data.data`, `data.train`,
`data.validation`, `data.test`, spelled as the user gave them) to `"sha256:<hex>"`:

  - a file: sha256 of its bytes;
  - a folder (a saved `datasets` folder): sha256 over its files in sorted relative-path
    order, each as path, size and bytes (`cache-*.arrow` files, which `datasets` writes
    beside the data when a loaded dataset is mapped, are left out);
  - a bundled dataset name: sha256 of the cached file that loading reads
    (`$TRANSFERKIT_CACHE/datasets/<name>/data.parquet`).

Nothing here downloads: a bundled dataset must already be cached, so call
`data_fingerprints` after `prepare_splits` (which fetches it on first use).
`check_fingerprints(recorded, cfg)` recomputes them and raises `UserError` naming the first
source that changed or went missing since they were recorded.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from ..config.finetune import DataConfig
from ..core.errors import UserError
from ..core.registry import DATASETS

ROLES = ("data", "train", "validation", "test")
_CHUNK = 1 << 20
_DIGESTS: dict[tuple[int, ...], str] = {}  # file_sha256's memory
_SETTLED_NS = 2 * 10**9


def data_fingerprints(cfg: DataConfig) -> dict[str, str]:
    """{source as given: "sha256:<hex>"} for every data source `cfg` names, in role order."""
    out: dict[str, str] = {}
    for role, source in _sources(cfg):
        if source not in out:
            digest = source_fingerprint(source)
            if digest is None:
                raise UserError(_missing(role, source))
            out[source] = digest
    return out


EVALUATE_HINT = "pass --data FILE to score other data"


def check_fingerprints(recorded: dict[str, str], cfg: DataConfig, hint: str = EVALUATE_HINT) -> None:
    """Raise `UserError` for the first source of `cfg` whose content differs from `recorded`
    (the message ends with `hint`: what the user can do instead).

    Sources without a recorded hash (runs made before hashes were kept) are not checked.
    A source that no longer exists (or a bundled dataset that is not cached) counts as changed.
    """
    for role, source in _sources(cfg):
        want = recorded.get(source)
        if want is None:
            continue
        now = source_fingerprint(source)
        if now is None:
            raise UserError(f"{_missing(role, source)}, so the data the run was trained on cannot be checked "
                            f"(it was {_short(want)}); {hint}")
        if now != want:
            raise UserError(f"{role} {source} changed since training ({_short(want)} then, {_short(now)} now); "
                            f"{hint}")


def source_fingerprint(source: str) -> str | None:
    """"sha256:<hex>" of a file, folder or cached bundled dataset; None if there is nothing to hash."""
    path = Path(str(source)).expanduser()
    if not path.exists() and str(source) in DATASETS:
        ds = DATASETS.get(str(source))
        cache_path = getattr(ds, "cache_path", None)
        path = cache_path if cache_path is not None else path
    if path.is_file():
        return "sha256:" + file_sha256(path)
    if path.is_dir():
        return "sha256:" + folder_sha256(path)
    return None


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks. Remembered for this process by the file's identity
    (device, inode, size, modification and change times in ns): a run hashes its data file for the fingerprint and
    again for the mapped cache's key, and a 1 GB file takes seconds to read each time. A file modified
    in the last `_SETTLED_NS` is not remembered: file times tick in milliseconds, so a rewrite of the
    same size within one tick would keep its time (git's "racy" entries)."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)  # ctime: a copy that keeps mtime
    if key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        if len(_DIGESTS) >= 1024:
            _DIGESTS.clear()
        _DIGESTS[key] = digest
    return digest


def folder_sha256(path: Path) -> str:
    """Hex sha256 over a folder's files: sorted relative paths, each with its size and bytes."""
    h = hashlib.sha256()
    files = sorted((p for p in path.rglob("*") if p.is_file() and not _is_hf_cache(p)),
                   key=lambda p: p.relative_to(path).as_posix())
    for f in files:
        rel = f.relative_to(path).as_posix().encode("utf-8")
        h.update(len(rel).to_bytes(8, "big") + rel + f.stat().st_size.to_bytes(8, "big"))
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
    return h.hexdigest()


def _is_hf_cache(p: Path) -> bool:
    return p.name.startswith("cache-") and p.suffix == ".arrow"


def _sources(cfg: DataConfig) -> list[tuple[str, str]]:
    return [(role, str(getattr(cfg, role))) for role in ROLES if getattr(cfg, role) is not None]


def _missing(role: str, source: str) -> str:
    if not Path(source).expanduser().exists() and source in DATASETS:
        ds = DATASETS.get(source)
        where = getattr(ds, "cache_path", None)
        return f"bundled dataset {source} is not cached{f' ({where})' if where else ''}"
    return f"{role} file not found: {source}"


def _short(digest: str) -> str:
    return digest[:len("sha256:") + 12]
