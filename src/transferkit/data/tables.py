"""The format readers: a bundled dataset name or a file as a `ColumnTable` (column names, each column's raw
values, and a way to name row i in messages), which every task reads its own columns from.

Accepted sources: a bundled dataset name (see `transferkit datasets`), `.csv`, `.tsv`,
`.jsonl` / `.json` (JSON lines, or one JSON array of objects), `.parquet`, or a folder
written by `datasets`' `save_to_disk` (`open_table` reads a `DatasetDict`'s `train` split, `hf_table`
any split). Rows keep file order. `read_texts` reads texts alone (no label column needed; `.txt` files
hold one text per line); `clean_texts` is the one rule for a text column. CoNLL files are `data.conll`.

Every problem the user can fix raises `UserError` with one line naming the file, the
column and the first bad row (rows count from 1, the header not counted; JSON lines
files report line numbers instead). Text columns must hold strings: a numeric column
picked as text (Parquet ints, JSON numbers) is refused, not turned into "0", "1", ...
When several candidate columns match (`text` and `sentence`, say), the choice is kept
as a note (the task's reader keeps it, and its split preparation logs it).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..core.errors import UserError
from ..core.registry import DATASETS
from .listing import clip, summarise

logger = logging.getLogger(__name__)

TEXT_CANDIDATES = ("text", "sentence", "review", "content", "document", "tweet")
EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


@dataclass
class ColumnTable:
    """Column-wise raw values plus a way to name row i in messages."""

    columns: list[str]
    values: Callable[[str], list]
    row_name: Callable[[int], str]
    class_names: dict[str, list[str]] | None = None  # HF ClassLabel columns: id -> name


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
        lines = [ln.strip() for ln in read_utf8(path, source).split("\n")]
        while lines and not lines[-1]:  # the final newline (and any blank tail) ends the file
            lines.pop()
        if not lines:
            raise UserError(f"{source}: file is empty (no rows)")
        blank = [i for i, ln in enumerate(lines, 1) if is_blank(ln)]
        if blank:
            raise UserError(f"{source}: {len(blank):,} empty or whitespace-only line(s) (first at line {blank[0]}); "
                            "each line is one text to predict: remove the blank lines")
        return lines
    table, name = open_table(source, role)
    col, note = pick_column(table, text_column, TEXT_CANDIDATES, "text", name)
    if note:
        logger.debug(f"note: {note}")
    return clean_texts(table, col, name)


def open_table(source: str, role: str) -> tuple[ColumnTable, str]:
    """Read any supported source into a `ColumnTable`; returns it with the name used in messages."""
    path = Path(source).expanduser()
    if source in DATASETS and not path.exists():
        return frame_table(DATASETS.get(source).load()), source
    if not path.exists():
        hint = ""
        if not path.suffix and "/" not in source:
            hint = f" (nor a bundled dataset: {summarise(DATASETS.names(), 10)})"
        raise UserError(f"{role} file not found: {source}{hint}")
    if path.is_dir():
        split = hf_train_split(path)
        return hf_table(path, split), (f"{source} [{split}]" if split else source)
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        raise UserError(f"{source}: unsupported file type {ext or '(no extension)'!r}; "
                        f"use {', '.join(EXTENSIONS)} or a datasets folder")
    if ext == ".parquet":
        return parquet_table(path, source), source
    text = read_utf8(path, source)
    if not text.strip():
        raise UserError(f"{source}: file is empty (no rows)")
    if ext in (".csv", ".tsv"):
        return csv_table(text, "," if ext == ".csv" else "\t", source), source
    return json_table(text, source), source


def dataset_dict_splits(path: str | Path) -> list[str]:
    """Split names of a saved `DatasetDict` folder; a one-line error for any other folder."""
    names = hf_split_names(path)
    if names is None:
        raise UserError(f"{path}: not a saved DatasetDict folder (no dataset_dict.json)")
    return names


def split_tables(source: str | Path) -> dict[str, tuple[ColumnTable, str]]:
    """Every split of a saved DatasetDict folder, or of a bundled dataset that comes split (a "split" column),
    as (table, the name messages use) by split name."""
    source = str(source)
    path = Path(source).expanduser()
    if source in DATASETS and not path.exists():
        df = DATASETS.get(source).load()
        if "split" not in df.columns:
            raise UserError(f"bundled dataset {source} does not come split")
        return {s: (frame_table(df[df["split"] == s].drop(columns=["split"]).reset_index(drop=True)), f"{source} [{s}]")
                for s in ("train", "validation", "test") if bool((df["split"] == s).any())}
    return {s: (hf_table(path, s), f"{source} [{s}]") for s in dataset_dict_splits(path)}


def presplit(source: str | None) -> bool:
    """True for a bundled dataset whose rows come with their split (so no summary or document is in two)."""
    return (source is not None and source in DATASETS and not Path(source).expanduser().exists()
            and "split" in getattr(DATASETS.get(source), "columns", ()))


def hf_split_names(path: str | Path) -> list[str] | None:
    """Split names of a saved `DatasetDict` folder, or None if `path` is not one."""
    f = Path(path) / "dataset_dict.json"
    if not f.is_file():
        return None
    try:
        return list(json.loads(f.read_text(encoding="utf-8"))["splits"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: dataset_dict.json is not readable") from None


# --- readers -------------------------------------------------------------------------

def read_utf8(path: Path, source: str) -> str:
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


def csv_table(text: str, sep: str, source: str) -> ColumnTable:
    import pandas as pd

    kind = "CSV" if sep == "," else "TSV"
    header = next((row for row in csv.reader(io.StringIO(text), delimiter=sep) if row), [])
    check_header(header, source)
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
    return frame_table(df)


def check_header(header: list[str], source: str) -> None:
    """A CSV/TSV header that names a column twice is refused: which of the two a run would read is a guess (pandas
    would rename the second `text.1` and read the first)."""
    seen: dict[str, int] = {}
    for k, name in enumerate(header):
        if name in seen:
            raise UserError(f"{source}: the header names column {clip(name)!r} twice (columns {seen[name] + 1} and "
                            f"{k + 1}); rename one")
        seen[name] = k


def json_table(text: str, source: str) -> ColumnTable:
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
    return ColumnTable(columns, lambda c: [r.get(c) for r in records], lambda i: f"{where} {lines[i]}")


def parquet_table(path: Path, source: str) -> ColumnTable:
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several unrelated types for a damaged file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{source}: not a readable Parquet file ({msg})") from None
    if len(df) == 0:
        raise UserError(f"{source}: file is empty (no rows)")
    return frame_table(df)


def frame_table(df: Any) -> ColumnTable:
    cols = [str(c) for c in df.columns]
    by_name = dict(zip(cols, df.columns))
    return ColumnTable(cols, lambda c: df[by_name[c]].tolist(), lambda i: f"row {i + 1}")


def hf_train_split(path: Path) -> str | None:
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


def hf_table(path: Path, split: str | None) -> ColumnTable:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path / split) if split else str(path))
    except Exception as e:  # datasets raises FileNotFoundError, ValueError, ArrowInvalid, ...
        raise UserError(f"{path}: could not load the saved dataset ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if len(ds) == 0:
        raise UserError(f"{path}{f' [{split}]' if split else ''}: dataset is empty (no rows)")
    names = {c: f.names for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
    return ColumnTable(list(ds.column_names), lambda c: list(ds[c]), lambda i: f"row {i + 1}", names)


# --- columns and cleaning ------------------------------------------------------------

def pick_column(table: ColumnTable, wanted: str | None, candidates: tuple[str, ...], what: str,
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


def is_missing(v: Any) -> bool:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return True
    return type(v).__name__ in ("NAType", "NaTType")  # pandas missing markers, without importing pandas


def scalar(v: Any) -> Any:
    """numpy scalars -> Python scalars, so labels hash and print plainly."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes, list, dict)) and getattr(v, "ndim", 0) == 0:
        return v.item()
    return v


def clean_texts(table: ColumnTable, col: str, where: str) -> list[str]:
    """Stripped texts of `col`; refuses non-string values and empty or missing texts."""
    values = [scalar(v) for v in table.values(col)]
    odd = [i for i, v in enumerate(values) if not isinstance(v, str) and not is_missing(v)]
    if odd:
        first = values[odd[0]]
        raise UserError(f"{where}: text column {clip(col)!r} holds {type(first).__name__} values, not strings "
                        f"({len(odd):,} of {len(values):,} rows; first {clip(repr(first), 30)} at {table.row_name(odd[0])}); "
                        f"texts must be strings: pick the text column with --text-column / data.text_column")
    out: list[str] = []
    bad: list[int] = []
    for i, v in enumerate(values):
        if is_missing(v):
            bad.append(i)
            out.append("")
            continue
        s = v.strip()
        if is_blank(s):
            bad.append(i)
        out.append(s)
    if bad:
        raise UserError(f"{where}: {len(bad):,} empty or missing text(s) in column {clip(col)!r} "
                        f"(first at {table.row_name(bad[0])}); remove or fill them")
    return out


# Unicode categories of characters that show nothing and that a tokenizer drops: controls, format characters
# (zero-width spaces and joiners, BOMs), surrogates, unassigned code points, separators (spaces, line breaks)
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Cn", "Zs", "Zl", "Zp"})


def is_blank(text: str) -> bool:
    """True when `text` has no visible character: whitespace alone, or controls and zero-width characters, which
    tokenize to nothing as "   " does (so a model would label no text at all)."""
    return all(unicodedata.category(c) in _INVISIBLE for c in text)


# --- compressed and plain text files ---------------------------------------------------

def file_extension(path: Path) -> str:
    """The lowercased extension, with `.gz` kept together with the one before it (`.jsonl.gz`)."""
    suffixes = [x.lower() for x in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == ".gz":
        return suffixes[-2] + ".gz"
    return path.suffix.lower()


GZIP_ERRORS = (OSError, EOFError, zlib.error)  # BadGzipFile is an OSError; a cut-off file is EOFError


def gzip_error(source: str, e: BaseException) -> UserError:
    """The one-line error for a damaged gzip file, read whole or streamed."""
    return UserError(f"{source}: not a readable gzip file ({str(e) or type(e).__name__})")


def read_text_file(path: Path, source: str) -> str:
    """A text file as UTF-8 (see `load._read_utf8`); `.gz` files are decompressed first."""
    if path.suffix.lower() != ".gz":
        return read_utf8(path, source)
    try:
        raw = gzip.decompress(path.read_bytes())
    except GZIP_ERRORS as e:
        raise gzip_error(source, e) from None
    return decode_utf8(raw, source, " (of the decompressed text)")
