"""Resumable checkpoints that load without unpickling and survive a kill at any instant.

This is a module of its own for two reasons. First, `--resume` reads a checkpoint folder that
anyone may have put there, so loading must never unpickle (a planted pickle runs code): tensors
go to safetensors files and everything else (optimizer hyperparameters, scheduler counters, RNG
states) to JSON through a small strict serializer, `encode`/`decode`, that knows JSON types,
tuples, int-keyed dicts, tensors and numpy arrays, and nothing else. Second, a kill, a full disk
or a power cut may stop a save at any step, and the run must still resume exactly:

* `save` removes a stale `last.tmp` and `last.old`, fills `last.tmp` (every file fsynced), writes
  `manifest.json` (each file's size and sha256) last, then renames `last` -> `last.old`,
  `last.tmp` -> `last` and removes `last.old`.
* A folder counts as a checkpoint only when its manifest verifies. `find`/`load` take `last`,
  else `last.old` (a kill between the two renames), else nothing: the run starts over. `settle`
  then renames a used `last.old` back, or clears the leftovers of a run that starts over.

Every filesystem step goes through one of the small `_fs_*` functions, so a test can kill a save
at each step in turn and prove that a resumed run still equals an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..core import fs
from ..core.errors import UserError

LAST, TMP, OLD = "last", "last.tmp", "last.old"
WEIGHTS, STATE, MANIFEST = "trainable.safetensors", "state.json", "manifest.json"
PARTS = ("optimizer", "rng")  # each stored as NAME.json (structure) + NAME.safetensors (tensors)
FILES = (WEIGHTS, *(f"{p}.{ext}" for p in PARTS for ext in ("safetensors", "json")), STATE)
BEST = "best.safetensors"  # the best weights, written at evaluation; their step is in the metadata
LEGACY = ("optimizer.pt", "rng.pt")  # the pickles older versions wrote: never loaded
FORMAT = 1


# ---- the filesystem steps (tests replace them to kill a save at any one) ---------------------------

def _fs_mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _fs_rmtree(path: Path) -> None:
    shutil.rmtree(path)


def _fs_rename(src: Path, dst: Path) -> None:
    fs.replace(src, dst)


def _fs_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    save_file(tensors, str(path), metadata=metadata)
    _fs_fsync(path)


def _fs_write_json(path: Path, obj: Any, indent: int | None = 1) -> None:
    fs.write_json(path, obj, indent=indent)  # through a temporary name, fsynced


def _fs_fsync(path: Path) -> None:
    """Flush a file, or a folder's entries (renames), to the disk; a power cut then keeps them."""
    if os.name == "nt" and path.is_dir():
        return  # Windows cannot open a folder; its renames are durable once they return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- the strict serializer ----------------------------------------------------------------------

def encode(obj: Any, tensors: dict[str, torch.Tensor], where: str = "") -> Any:
    """`obj` as JSON; tensors and numpy arrays move to `tensors` under generated names.

    Tuples become {"$tuple": [...]}, dicts with non-string keys {"$dict": [[key, value], ...]},
    non-finite floats {"$float": "nan"}. Anything else is a TypeError: nothing is pickled.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"$float": repr(obj)}
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        name = f"t{len(tensors)}"
        is_tensor = isinstance(obj, torch.Tensor)
        tensors[name] = obj.detach().cpu().contiguous() if is_tensor else torch.from_numpy(obj.copy())
        return {"$tensor" if is_tensor else "$ndarray": name}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return {"$tuple": [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        if all(isinstance(k, (int, str)) and not isinstance(k, bool) for k in obj):
            return {"$dict": [[k, encode(v, tensors, f"{where}[{k!r}]")] for k, v in obj.items()]}
    raise TypeError(f"a checkpoint cannot store {type(obj).__name__} (at {where or 'top level'})")


def decode(obj: Any, tensors: dict[str, torch.Tensor], source: Path, used: set[str] | None = None,
           where: str = "") -> Any:
    """The inverse of `encode`; anything it would not have written is a UserError naming `source`."""
    used = set() if used is None else used
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [decode(v, tensors, source, used, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        tags = [k for k in obj if k.startswith("$")]
        if not tags:
            return {k: decode(v, tensors, source, used, f"{where}.{k}") for k, v in obj.items()}
        tag, value = tags[0], obj[tags[0]]
        if len(obj) == 1:
            if tag == "$tuple" and isinstance(value, list):
                return tuple(decode(v, tensors, source, used, f"{where}[{i}]") for i, v in enumerate(value))
            if tag == "$dict" and isinstance(value, list) and all(
                    isinstance(p, list) and len(p) == 2 and isinstance(p[0], (int, str))
                    and not isinstance(p[0], bool) for p in value):
                return {k: decode(v, tensors, source, used, f"{where}[{k!r}]") for k, v in value}
            if tag in ("$tensor", "$ndarray") and isinstance(value, str) and value in tensors:
                used.add(value)
                return tensors[value] if tag == "$tensor" else tensors[value].numpy()
            if tag == "$float" and value in ("nan", "inf", "-inf"):
                return float(value)
    raise UserError(f"checkpoint file {source} is damaged: unexpected {json.dumps(obj)[:60]} "
                    f"at {where or 'top level'}")


# ---- reading and verifying ----------------------------------------------------------------------

def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_json(path: Path) -> Any:
    """Strict JSON (no NaN or Infinity); a missing or unreadable file is a UserError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"checkpoint file {path} is damaged: {one_line(e)}") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"checkpoint file {path} is damaged: {one_line(e)}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def problem(folder: Path) -> str | None:
    """None when `folder` is a complete checkpoint, else why not, naming the damaged file."""
    path = folder / MANIFEST
    if not path.is_file():
        return f"{path} is missing (the save did not finish)"
    try:
        manifest = read_json(path)
    except UserError as e:
        return str(e)
    files = manifest.get("files") if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None
    if not isinstance(files, dict) or not set(FILES) <= set(files):
        return f"{path} is damaged or from another transferkit version"
    for name, want in files.items():
        p = folder / name
        if not (isinstance(want, dict) and name == Path(name).name and name not in ("", ".", "..")):
            return f"{path} is damaged at {name!r}"
        if not p.is_file():
            return f"{p} is missing"
        if p.stat().st_size != want.get("bytes"):
            return f"{p} is damaged ({p.stat().st_size} bytes, {MANIFEST} says {want.get('bytes')})"
        if _sha256(p) != want.get("sha256"):
            return f"{p} is damaged (its sha256 differs from {MANIFEST})"
    return None


@dataclass
class Checkpoint:
    """What `load` read from a verified folder (all tensors on the CPU)."""

    folder: Path
    weights: dict[str, torch.Tensor]
    optimizer: Any
    rng: Any
    state: dict[str, Any]


def _read_part(folder: Path, name: str) -> Any:
    source = folder / f"{name}.json"
    tensors = read_tensors(folder / f"{name}.safetensors")
    used: set[str] = set()
    obj = decode(read_json(source), tensors, source, used)
    if used != set(tensors):
        raise UserError(f"checkpoint file {folder / name}.safetensors is damaged: it holds tensors {source.name} "
                        "does not name")
    return obj


def find(ckpt_dir: Path) -> Path | None:
    """The folder `load` reads: `last` if complete, else `last.old`; None when neither is (start over).

    Cheap enough to call before any work (it reads the files once to check them). Neither folder being
    complete cannot come from an interrupted save (a save removes `last.old` only once `last` is whole):
    a `last` or a `last.old` that fails verification with no good one beside it is a UserError naming
    the damaged file, as is a folder of pickles from an older transferkit.
    """
    last, old = ckpt_dir / LAST, ckpt_dir / OLD
    damaged: tuple[Path, str] | None = None
    for folder in (last, old):
        if not folder.is_dir():
            continue
        if any((folder / n).exists() for n in LEGACY) and not (folder / MANIFEST).exists():
            raise UserError(f"{folder} was written by an older transferkit ({', '.join(LEGACY)}): pickle files "
                            f"are not loaded, as they can run code; remove {folder} to start the run over")
        why = problem(folder)
        if why is None:
            return folder
        damaged = damaged or (folder, why)
    if damaged is not None:
        raise UserError(f"cannot resume from {damaged[0]}: {damaged[1]}; remove {damaged[0]} to start the run over")
    return None


def load(ckpt_dir: Path) -> Checkpoint | None:
    """Read the checkpoint `find` picks; None when there is none."""
    folder = find(ckpt_dir)
    if folder is None:
        return None
    state = decode(read_json(folder / STATE), {}, folder / STATE)
    if not isinstance(state, dict):
        raise UserError(f"checkpoint file {folder / STATE} is damaged: not an object")
    return Checkpoint(folder, read_tensors(folder / WEIGHTS), _read_part(folder, "optimizer"),
                      _read_part(folder, "rng"), state)


def settle(ckpt_dir: Path, used: Checkpoint | None) -> None:
    """After `load` (main process, once every process has read): make the folder the next save expects.

    A checkpoint loaded from `last.old` is renamed back to `last`. With none loaded the run starts
    over, so leftovers of the attempt before (partial folders, its best weights) are removed.
    """
    last, old, tmp = ckpt_dir / LAST, ckpt_dir / OLD, ckpt_dir / TMP
    if used is not None and used.folder == old:
        if last.exists():
            _fs_rmtree(last)  # damaged: `load` verified it and fell back to `last.old`
        _fs_rename(old, last)
        _fs_fsync(ckpt_dir)
    elif used is None:
        for folder in (tmp, old):
            if folder.exists():
                _fs_rmtree(folder)
        for stale in (ckpt_dir / BEST, ckpt_dir / (BEST + ".tmp")):
            stale.unlink(missing_ok=True)


# ---- writing ------------------------------------------------------------------------------------

def save(ckpt_dir: Path, weights: dict[str, torch.Tensor], optimizer: Any, rng: Any, state: dict[str, Any],
         records: Path | None = None) -> None:
    """Write `ckpt_dir/last` so that a kill at any step leaves `last` or `last.old` complete.

    `records` (the metrics file whose line count `state` holds) is fsynced first. A refused write
    (full disk, read-only) removes `last.tmp`, keeps the previous checkpoint and is a UserError.
    """
    last, old, tmp = ckpt_dir / LAST, ckpt_dir / OLD, ckpt_dir / TMP
    try:
        _fs_mkdir(ckpt_dir)
        for stale in (tmp, old):  # left by a killed save; `load` has already used `old` if it was needed
            if stale.exists():
                _fs_rmtree(stale)
        if records is not None and records.is_file():
            _fs_fsync(records)
        _fs_mkdir(tmp)
        _fs_save_tensors(weights, tmp / WEIGHTS)
        for name, obj in (("optimizer", optimizer), ("rng", rng)):
            tensors: dict[str, torch.Tensor] = {}
            doc = encode(obj, tensors)
            _fs_save_tensors(tensors, tmp / f"{name}.safetensors")
            _fs_write_json(tmp / f"{name}.json", doc, indent=None)
        plain: dict[str, torch.Tensor] = {}
        state_doc = encode(state, plain)
        if plain:
            raise TypeError(f"{STATE} holds plain values, not tensors")
        _fs_write_json(tmp / STATE, state_doc)
        files = {n: {"bytes": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in FILES}
        _fs_write_json(tmp / MANIFEST, {"format": FORMAT, "files": files})  # last: it makes the folder count
        _fs_fsync(tmp)
        if last.exists():
            _fs_rename(last, old)
        _fs_rename(tmp, last)
        _fs_fsync(ckpt_dir)
        if old.exists():
            _fs_rmtree(old)
    except UserError:  # fs turned a refused write into a one-line error already
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:  # a kill is not an Exception: it leaves everything as it was for `load` to sort out
        shutil.rmtree(tmp, ignore_errors=True)
        if fs.is_storage_error(e):  # an OSError, or safetensors' SafetensorError carrying one
            raise fs.storage_error(e, getattr(e, "filename", None) or tmp) from None
        raise


def save_best(ckpt_dir: Path, weights: dict[str, torch.Tensor], step: int) -> None:
    """Write best.safetensors through a temporary file (a stale one is simply overwritten)."""
    path, tmp = ckpt_dir / BEST, ckpt_dir / (BEST + ".tmp")
    try:
        _fs_mkdir(ckpt_dir)
        _fs_save_tensors(weights, tmp, {"step": str(step)})
        _fs_rename(tmp, path)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        if fs.is_storage_error(e):  # an OSError, or safetensors' SafetensorError carrying one
            raise fs.storage_error(e, getattr(e, "filename", None) or path) from None
        raise


def load_best(ckpt_dir: Path, step: int) -> dict[str, torch.Tensor] | None:
    """The best weights if best.safetensors holds those of `step`, else None.

    It may hold a later step's: an evaluation wrote them and the run was killed before the next
    checkpoint. Those are not the best weights of the checkpoint being resumed.
    """
    path = ckpt_dir / BEST
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("step") != str(step):
                return None
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError):  # missing or damaged: like another step's
        return None


# ---- random number generators -------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Every generator training draws from: torch CPU, Python, numpy, and CUDA where present."""
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: Any, source: Path) -> None:
    try:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        if state["cuda"] is not None and torch.cuda.is_available():
            for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"checkpoint file {source} is damaged: {one_line(e)}") from None
