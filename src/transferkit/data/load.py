"""Read labelled text from a bundled dataset name or a file into `LabelledData`.

Accepted sources: a bundled dataset name (see `transferkit datasets`), `.csv`, `.tsv`,
`.jsonl` / `.json` (JSON lines, or one JSON array of objects), `.parquet`, or a folder
written by `datasets`' `save_to_disk`. For a `DatasetDict` folder `load_table` reads its
`train` split; `load_hf_splits` returns every split. Rows keep file order. `read_texts`
reads texts alone (no label column needed; `.txt` files hold one text per line).

Every problem the user can fix raises `UserError` with one line naming the file, the
column and the first bad row (rows count from 1, the header not counted; JSON lines
files report line numbers instead). Text columns must hold strings: a numeric column
picked as text (Parquet ints, JSON numbers) is refused, not turned into "0", "1", ...
When several candidate columns match (`text` and `sentence`, say), the choice is kept
as a note on `LabelledData.notes` (and `prepare_splits` logs it).
"""
from __future__ import annotations

import io
import json
import logging
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.errors import UserError
from ..core.registry import DATASETS
from .listing import clip, summarise

logger = logging.getLogger(__name__)

TEXT_CANDIDATES = ("text", "sentence", "review", "content", "document", "tweet")
LABEL_CANDIDATES = ("label", "labels", "sentiment", "class", "target", "category")
EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


@dataclass
class LabelledData:
    """Texts with their labels (str or int, as found in the source), in source order."""

    texts: list[str]
    labels: list
    source: str
    notes: list[str] = field(default_factory=list)  # e.g. which of several candidate columns was used

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class _Table:
    """Column-wise raw values plus a way to name row i in messages."""

    columns: list[str]
    values: Callable[[str], list]
    row_name: Callable[[int], str]
    class_names: dict[str, list[str]] | None = None  # HF ClassLabel columns: id -> name


def load_table(source: str, text_column: str | None = None, label_column: str | None = None,
               role: str = "data") -> LabelledData:
    """Load `source` (bundled dataset name or path) as texts and labels; `role` names it in errors."""
    table, name = _open(str(source), role)
    return _to_labelled(table, name, text_column, label_column)


def read_texts(source: str, text_column: str | None = None, role: str = "input") -> list[str]:
    """Texts only (no label needed), e.g. for prediction; also reads `.txt` as one text per line.

    Every line (or cell) must hold a text: an empty or whitespace-only one is refused with its
    line (row) number, since skipping it would shift every later prediction against the input.
    Blank lines at the very end of a `.txt` file are ignored. Which column was used when several
    candidates match is a DEBUG line (`predict` never printed it; `--verbose` shows it).
    """
    source = str(source)
    path = Path(source).expanduser()
    if path.suffix.lower() == ".txt" and path.is_file():
        lines = [ln.strip() for ln in _read_utf8(path, source).split("\n")]
        while lines and not lines[-1]:  # the final newline (and any blank tail) ends the file
            lines.pop()
        if not lines:
            raise UserError(f"{source}: file is empty (no rows)")
        blank = [i for i, ln in enumerate(lines, 1) if not ln]
        if blank:
            raise UserError(f"{source}: {len(blank):,} empty or whitespace-only line(s) (first at line {blank[0]}); "
                            "each line is one text to predict: remove the blank lines")
        return lines
    table, name = _open(source, role)
    col, note = _pick_column(table, text_column, TEXT_CANDIDATES, "text", name)
    if note:
        logger.debug(f"note: {note}")
    return _clean_texts(table, col, name)


def _open(source: str, role: str) -> tuple[_Table, str]:
    """Read any supported source into a `_Table`; returns it with the name used in messages."""
    path = Path(source).expanduser()
    if source in DATASETS and not path.exists():
        return _frame_table(DATASETS.get(source).load()), source
    if not path.exists():
        hint = ""
        if not path.suffix and "/" not in source:
            hint = f" (nor a bundled dataset: {summarise(DATASETS.names(), 10)})"
        raise UserError(f"{role} file not found: {source}{hint}")
    if path.is_dir():
        split = _hf_train_split(path)
        return _hf_table(path, split), (f"{source} [{split}]" if split else source)
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        raise UserError(f"{source}: unsupported file type {ext or '(no extension)'!r}; "
                        f"use {', '.join(EXTENSIONS)} or a datasets folder")
    if ext == ".parquet":
        return _parquet_table(path, source), source
    text = _read_utf8(path, source)
    if not text.strip():
        raise UserError(f"{source}: file is empty (no rows)")
    if ext in (".csv", ".tsv"):
        return _csv_table(text, "," if ext == ".csv" else "\t", source), source
    return _json_table(text, source), source


def hf_split_names(path: str | Path) -> list[str] | None:
    """Split names of a saved `DatasetDict` folder, or None if `path` is not one."""
    f = Path(path) / "dataset_dict.json"
    if not f.is_file():
        return None
    try:
        return list(json.loads(f.read_text(encoding="utf-8"))["splits"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: dataset_dict.json is not readable") from None


def load_hf_splits(path: str | Path, text_column: str | None = None,
                   label_column: str | None = None) -> dict[str, LabelledData]:
    """Every split of a saved `DatasetDict` folder, by split name."""
    names = hf_split_names(path)
    if names is None:
        raise UserError(f"{path}: not a saved DatasetDict folder (no dataset_dict.json)")
    out = {}
    for split in names:
        label = f"{path} [{split}]"
        out[split] = _to_labelled(_hf_table(Path(path), split), label, text_column, label_column)
    return out


# --- readers -------------------------------------------------------------------------

def _read_utf8(path: Path, source: str) -> str:
    """Decode strictly as UTF-8 (a BOM is allowed) so bad bytes are reported, never guessed."""
    return decode_utf8(path.read_bytes(), source)


def decode_utf8(raw: bytes, source: str, where: str = "") -> str:
    """`raw` as UTF-8 text (a BOM is allowed); bad bytes are a UserError naming line and offset
    (`where` qualifies the line, e.g. " (of the decompressed text)")."""
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        return raw[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = start + e.start
        line = raw[:offset].count(b"\n") + 1
        raise UserError(f"{source}: not valid UTF-8 at line {line}{where}, byte offset {offset} "
                        f"(byte 0x{raw[offset]:02x}); save the file as UTF-8") from None


def _csv_table(text: str, sep: str, source: str) -> _Table:
    import pandas as pd

    kind = "CSV" if sep == "," else "TSV"
    try:
        # Everything as strings with no NA guessing: a text "NA" or "null" stays a text.
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{source}: file is empty (no rows)") from None
    except (pd.errors.ParserError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{source}: not valid {kind} ({msg})") from None
    if len(df) == 0:
        raise UserError(f"{source}: no data rows (only a header)")
    return _frame_table(df)


def _json_table(text: str, source: str) -> _Table:
    stripped = text.lstrip()
    if stripped.startswith("["):  # a single JSON array of objects
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}: line {e.lineno} is not valid JSON ({e.msg})") from None
        lines = list(range(1, len(records) + 1))
        where = "record"
    else:
        records, lines = [], []
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{source}: line {lineno} is not valid JSON ({e.msg} at column {e.colno})") from None
            lines.append(lineno)
        where = "line"
    if not records:
        raise UserError(f"{source}: file is empty (no rows)")
    for rec, n in zip(records, lines):
        if not isinstance(rec, dict):
            raise UserError(f"{source}: {where} {n} is a JSON {type(rec).__name__}, expected an object")
    columns: list[str] = []
    seen: set[str] = set()
    for rec in records:
        for k in rec:
            if k not in seen:
                seen.add(k)
                columns.append(k)
    return _Table(columns, lambda c: [r.get(c) for r in records], lambda i: f"{where} {lines[i]}")


def _parquet_table(path: Path, source: str) -> _Table:
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several unrelated types for a damaged file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{source}: not a readable Parquet file ({msg})") from None
    if len(df) == 0:
        raise UserError(f"{source}: file is empty (no rows)")
    return _frame_table(df)


def _frame_table(df: Any) -> _Table:
    cols = [str(c) for c in df.columns]
    by_name = dict(zip(cols, df.columns))
    return _Table(cols, lambda c: df[by_name[c]].tolist(), lambda i: f"row {i + 1}")


def _hf_train_split(path: Path) -> str | None:
    names = hf_split_names(path)
    if names is None:
        if not (path / "state.json").is_file():
            raise UserError(f"{path}: a folder, but not one written by datasets' save_to_disk "
                            "(no dataset_dict.json or state.json)")
        return None
    if "train" in names:
        return "train"
    if len(names) == 1:
        return names[0]
    raise UserError(f"{path}: DatasetDict has no 'train' split (splits: {summarise(names)})")


def _hf_table(path: Path, split: str | None) -> _Table:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path / split) if split else str(path))
    except Exception as e:  # datasets raises FileNotFoundError, ValueError, ArrowInvalid, ...
        raise UserError(f"{path}: could not load the saved dataset ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if len(ds) == 0:
        raise UserError(f"{path}{f' [{split}]' if split else ''}: dataset is empty (no rows)")
    names = {c: f.names for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
    return _Table(list(ds.column_names), lambda c: list(ds[c]), lambda i: f"row {i + 1}", names)


# --- columns and cleaning ------------------------------------------------------------

def _pick_column(table: _Table, wanted: str | None, candidates: tuple[str, ...], what: str,
                 where: str) -> tuple[str, str | None]:
    """The column to use, plus a note when other candidate columns were present too (else None)."""
    cols = table.columns
    listing = summarise(cols)
    if wanted is not None:
        if wanted in cols:
            return wanted, None
        loose = [c for c in cols if c.strip().lower() == wanted.strip().lower()]
        if len(loose) == 1:
            return loose[0], None
        raise UserError(f"{where}: {what} column {clip(wanted)!r} not found; available columns: {listing}")
    chosen = None
    for cand in candidates:
        if cand in cols:
            chosen = cand
            break
    else:
        for cand in candidates:
            loose = [c for c in cols if c.strip().lower() == cand]
            if len(loose) == 1:
                chosen = loose[0]
                break
    if chosen is None:
        raise UserError(f"{where}: no {what} column found (looked for {', '.join(candidates)}); "
                        f"available columns: {listing}; set data.{what}_column (--{what}-column)")
    others = [c for c in cols if c != chosen and c.strip().lower() in candidates]
    note = None
    if others:
        note = (f"{where}: using column {chosen!r} as the {what}; also present: {summarise(others, quote=True)} "
                f"(pick another with --{what}-column / data.{what}_column)")
    return chosen, note


def _is_missing(v: Any) -> bool:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return True
    return type(v).__name__ in ("NAType", "NaTType")  # pandas missing markers, without importing pandas


def _scalar(v: Any) -> Any:
    """numpy scalars -> Python scalars, so labels hash and print plainly."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes, list, dict)) and getattr(v, "ndim", 0) == 0:
        return v.item()
    return v


def _to_labelled(table: _Table, where: str, text_column: str | None,
                 label_column: str | None) -> LabelledData:
    tcol, tnote = _pick_column(table, text_column, TEXT_CANDIDATES, "text", where)
    lcol, lnote = _pick_column(table, label_column, LABEL_CANDIDATES, "label", where)
    if tcol == lcol:
        raise UserError(f"{where}: text and label columns are both {clip(tcol)!r}")
    texts = _clean_texts(table, tcol, where)
    labels = _clean_labels(table, lcol, where)
    return LabelledData(texts, labels, where, [n for n in (tnote, lnote) if n])


def _clean_texts(table: _Table, col: str, where: str) -> list[str]:
    """Stripped texts of `col`; refuses non-string values and empty or missing texts."""
    values = [_scalar(v) for v in table.values(col)]
    odd = [i for i, v in enumerate(values) if not isinstance(v, str) and not _is_missing(v)]
    if odd:
        first = values[odd[0]]
        raise UserError(f"{where}: text column {clip(col)!r} holds {type(first).__name__} values, not strings "
                        f"({len(odd):,} of {len(values):,} rows; first {clip(repr(first), 30)} at {table.row_name(odd[0])}); "
                        f"texts must be strings: pick the text column with --text-column / data.text_column")
    out: list[str] = []
    bad: list[int] = []
    for i, v in enumerate(values):
        if _is_missing(v):
            bad.append(i)
            out.append("")
            continue
        s = v.strip()
        if not s:
            bad.append(i)
        out.append(s)
    if bad:
        raise UserError(f"{where}: {len(bad):,} empty or missing text(s) in column {clip(col)!r} "
                        f"(first at {table.row_name(bad[0])}); remove or fill them")
    return out


def _clean_labels(table: _Table, col: str, where: str, normalise: bool = True) -> list:
    """Stripped labels of `col`, refusing missing and list-valued ones; `normalise` turns integral
    numbers and numeric strings into ints (a streaming reader decides that once, over every value)."""
    names = (table.class_names or {}).get(col)
    out: list = []
    bad: list[int] = []
    for i, v in enumerate(table.values(col)):
        v = _scalar(v)
        if names is not None and isinstance(v, int):
            # A ClassLabel id outside its names (datasets uses -1 for "no label") is missing.
            v = names[v] if 0 <= v < len(names) else None
        if isinstance(v, str):
            v = v.strip()
        if _is_missing(v) or v == "":
            bad.append(i)
            out.append(None)
            continue
        if isinstance(v, (list, dict, tuple)):
            raise UserError(f"{where}: label column {clip(col)!r} holds a {type(v).__name__} at "
                            f"{table.row_name(i)}; only one label per row is supported")
        if isinstance(v, bool):
            v = str(v).lower()
        out.append(v)
    if bad:
        raise UserError(f"{where}: {len(bad):,} missing label(s) in column {clip(col)!r} "
                        f"(first at {table.row_name(bad[0])}); remove or label those rows")
    return _normalise_labels(out) if normalise else out


def _normalise_labels(labels: list) -> list:
    """Integral numbers (float or numeric strings) become ints; anything else stays as found."""
    if all(isinstance(v, numbers.Real) for v in labels):
        if all(float(v).is_integer() for v in labels):
            return [int(v) for v in labels]
        return labels
    if all(isinstance(v, str) for v in labels):
        # CSV/TSV cells are read as strings; numeric label columns come back as ints.
        try:
            nums = [float(v) for v in labels]
        except ValueError:
            return labels
        if all(math.isfinite(x) and x.is_integer() for x in nums):
            return [int(x) for x in nums]
        return labels
    return [str(v) for v in labels]  # mixed types: compare by their text form
