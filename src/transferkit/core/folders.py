"""The one reader of run and model folders: check before loading, translate what still fails.

Everything transferkit loads from disk (a run's artefact, a base model, a pretraining run's
model, a checkpoint's JSON) is data, never code: safetensors and JSON only. Before a folder is
handed to transformers or peft, `check_folder` opens every safetensors header (a truncated or
zeroed file fails here, naming it), parses every JSON file, and refuses a folder whose weights
exist only in pickle formats (`pytorch_model.bin`, `.pt`, ...) — transformers' own message for
those suggests `weights_only=False`, which would run whatever the file contains. What can still
go wrong inside a library call is turned into a one-line `UserError` by `loading(...)`.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# JSON files a model, adapter or tokenizer folder may hold; each must parse.
JSON_SUFFIXES = (".json",)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_json(path: Path | str, what: str = "file", strict: bool = False) -> Any:
    """Parse a JSON file; a missing, non-UTF-8 or malformed file is a UserError naming it.

    `strict`: also refuse NaN/Infinity (files transferkit writes never hold them; other tools' may)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"), **({"parse_constant": _no_constants} if strict else {}))
    except UnicodeDecodeError:
        raise UserError(f"{path}: {what} is not UTF-8 text (damaged?)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: {what} is not valid JSON ({e.msg} at line {e.lineno}; damaged or half-written?)") from None
    except ValueError as e:  # a NaN/Infinity constant in strict mode
        raise UserError(f"{path}: {what} is not valid JSON ({e}; damaged or edited?)") from None
    except OSError as e:
        raise UserError(f"{path}: {what} cannot be read ({e.strerror or type(e).__name__})") from None


def read_json_object(path: Path | str, what: str = "file", strict: bool = False) -> dict[str, Any]:
    data = read_json(path, what, strict)
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} holds a JSON {type(data).__name__}, expected an object")
    return data


def check_safetensors(path: Path | str) -> list[str]:
    """Tensor names in a safetensors file after checking its header covers the file; else a UserError."""
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            return list(f.keys())
    except SafetensorError as e:
        why = str(e).split(":", 1)[-1].strip() or "unreadable"
        raise UserError(f"{path}: damaged safetensors file ({why}; truncated or overwritten?)") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None


def check_folder(folder: Path | str, need: tuple[str, ...] = (), what: str = "model folder",
                 weights: bool = True) -> Path:
    """Check `folder` before any library loads it; returns it.

    `need`: files that must exist (alternatives separated by '|', e.g. "model.safetensors|model.safetensors.index.json").
    `weights`: the folder must hold safetensors weights; pickle-only weights are refused by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{what} not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    if weights and not safetensors:
        pickles = [p for p in files if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            raise UserError(f"{pickles[0]}: pickle weights are not loaded (they can run code); "
                            f"{what} {folder} needs safetensors weights (convert with save_pretrained(..., "
                            f"safe_serialization=True) where you trust the file)")
        raise UserError(f"{what} {folder} has no weights (no .safetensors file)")
    for alternatives in need:
        names = alternatives.split("|")
        if not any((folder / n).is_file() for n in names):
            raise UserError(f"{what} {folder} is incomplete: {' or '.join(names)} is missing")
    for p in files:
        if p.suffix in JSON_SUFFIXES:
            read_json(p, "file")
    for p in safetensors:
        check_safetensors(p)
    return folder


def check_finite(module: Any, where: Path | str) -> None:
    """Refuse a loaded model whose weights hold NaN or infinity (its predictions would be NaN)."""
    import torch
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UserError(f"{where}: weight {name} holds NaN or infinite values (damaged or diverged run)")


@contextlib.contextmanager
def loading(path: Path | str, what: str = "model") -> Iterator[None]:
    """Turn any library failure while loading `path` into one line naming it (UserErrors pass through)."""
    try:
        yield
    except UserError:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - safetensors, transformers, peft, tokenizers, json all raise their own types
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{path}: cannot load the {what} ({type(e).__name__}{': ' + first if first else ''})") from None
