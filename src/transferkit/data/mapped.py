"""Data larger than memory: a file streamed into a memory-mapped Arrow cache, for any task's columns.

This module is the one cache: the folder (`open_or_build`, `build_folder`: built whole or not at all, a
damaged one rebuilt), the mapped file (`Mapping`, `take_rows`, `MappedTexts`) and the streaming readers
(`csv_chunks`, `jsonl_chunks`, `parquet_chunks`: `data.tables` column tables, a chunk at a time). Each task
says which columns it keeps and how a chunk's rows are checked: sentence classification in
`tasks/classify/mapped.py` (text, label code), NER in `tasks/ner/mapped.py` (tokens, tags).

With `data.storage=mapped` (or `auto` and a file over `AUTO_BYTES`) a CSV, TSV, JSON-lines or
Parquet file is read `CHUNK_ROWS` rows at a time; each chunk goes through the in-memory reader's
own cleaners (the same column choice, the same refusals naming the first bad row; the
counts in such a message are those of its chunk) and is appended
to `<cache>/tables/<key>/rows.arrow`. The run then holds per row an 8-byte hash
of the text (dedupe and the overlap checks work on it), a label and a row index; the texts stay in
the mapped file and are read a chunk at a time where a step needs them (tokenization, an error
message), and a split's token ids go to a mapped Arrow file of their own (`tokenize_mapped`). The
file's sha256 and the chosen columns key the cache, so a second run on the same file skips parsing,
and the same tokenizer and split skip tokenization. Reads go chunk by chunk (`take_rows`) through a
`Mapping` whose pages are let go after each chunk of a full pass, so a pass over a million rows
leaves no more than a chunk of the file resident.

Own code rather than `datasets.load_dataset("csv"/"json")`: that reader guesses missing values (a
text "NA" becomes null), stops with a traceback that names no row, and keys its cache by pickling
the builder's config. Here the rules of the in-memory path hold row for row (tests compare the
splits and every batch of both paths). A `.json` file holding one array, a saved `datasets` folder
and a bundled dataset are not streamed (`load_mapped` returns None and the in-memory reader runs).

Dedupe compares 64-bit BLAKE2 hashes of the texts: two different texts collide with probability
about n^2 / 2^65 (3e-8 for a million rows).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import mmap
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np

from ..core import fs
from ..core.errors import UserError
from .tables import ColumnTable, check_header, read_utf8

logger = logging.getLogger(__name__)

CHUNK_ROWS = 50_000  # rows per chunk read, checked and written (~15 MB of sentence-length text)
AUTO_BYTES = 64 * 2**20  # storage=auto maps files larger than this
FORMAT = 1  # bump when the cached layout changes
STREAMED = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


class MappedTexts(Sequence):
    """The texts of chosen rows of a cached table, read from the mapped file on demand.

    Indexing gives a str; a slice or `take(rows)` gives another MappedTexts over those rows (nothing
    is read); iterating reads `CHUNK_ROWS` texts at a time. `keys` holds each row's text hash.
    """

    def __init__(self, column: Any, rows: np.ndarray, keys: np.ndarray, table_key: str, mapping: "Mapping") -> None:
        self.column = column  # pyarrow ChunkedArray of every row of the table
        self.rows = np.asarray(rows, dtype=np.int64)  # [n] rows of the table, in this sequence's order
        self.keys = np.asarray(keys, dtype=np.uint64)  # [n] text hashes of those rows
        self.table_key, self.mapping = table_key, mapping

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return MappedTexts(self.column, self.rows[i], self.keys[i], self.table_key, self.mapping)
        return self.column[int(self.rows[i])].as_py()

    def take(self, idx: Sequence[int]) -> "MappedTexts":
        idx = np.asarray(idx, dtype=np.int64)
        return MappedTexts(self.column, self.rows[idx], self.keys[idx], self.table_key, self.mapping)

    def __iter__(self) -> Iterator[str]:
        for s in range(0, len(self.rows), CHUNK_ROWS):
            yield from take_rows(self.column, self.rows[s:s + CHUNK_ROWS]).to_pylist()
            self.mapping.release()

    def fingerprint(self) -> str:
        """Names exactly these rows of exactly this table (keys the token cache)."""
        return hashlib.sha256(self.table_key.encode() + self.rows.tobytes()).hexdigest()[:20]


def take_rows(column: Any, rows: np.ndarray) -> Any:
    """`column.take(rows)` chunk by chunk. pyarrow's take on a chunked array first joins every chunk
    into one array (measured: taking 20,000 of 500,000 rows of a 182 MB column grew RSS by 202 MB),
    which on a mapped table copies the whole column into memory for each read."""
    import pyarrow as pa
    rows = np.asarray(rows, dtype=np.int64)
    chunks = column.chunks
    if len(chunks) == 1:
        return chunks[0].take(pa.array(rows))
    starts = np.cumsum([0] + [len(c) for c in chunks])
    which = np.searchsorted(starts, rows, side="right") - 1  # [n] the chunk of each row
    order = np.argsort(which, kind="stable")  # the rows grouped by chunk, in the asked order within each
    bounds = np.searchsorted(which[order], np.arange(len(chunks) + 1))
    pieces = [chunks[c].take(pa.array(rows[order[bounds[c]:bounds[c + 1]]] - starts[c]))
              for c in range(len(chunks)) if bounds[c + 1] > bounds[c]]
    if not pieces:
        return pa.array([], type=column.type)
    return pa.concat_arrays(pieces).take(pa.array(np.argsort(order, kind="stable")))  # back in the asked order


class Mapping:
    """A cache file mapped read-only (Python's mmap, so its pages can be let go: `release`).

    Reading a mapped file makes its pages resident, and they stay counted in the process's RSS until
    memory runs short. A pass over every row (tokenizing a million texts) would so show the whole file
    as resident; `release()` after each chunk tells the kernel the pages may go (they are read back
    from the page cache if touched again)."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # an empty file raises ValueError

    def table(self) -> Any:
        import pyarrow as pa
        return pa.ipc.open_file(pa.BufferReader(pa.py_buffer(self.mm))).read_all()  # zero-copy over the map

    def release(self) -> None:
        if hasattr(mmap, "MADV_DONTNEED"):
            self.mm.madvise(mmap.MADV_DONTNEED)


def wants_mapped(storage: str, source: str) -> bool:
    """Whether `source` is read through the mapped path under `data.storage=storage`."""
    path = Path(source).expanduser()
    if storage == "memory" or not path.is_file() or path.suffix.lower() not in STREAMED:
        return False
    return storage == "mapped" or path.stat().st_size > AUTO_BYTES


# ---- the cache folder ----------------------------------------------------------------------------

class Cached(NamedTuple):
    """A complete cache folder: its meta.json, the mapped table, its hash arrays (mapped), the mapping."""

    meta: dict
    table: Any
    arrays: dict[str, np.ndarray]
    mapping: "Mapping"


def open_or_build(folder: Path, build: Callable[[Path], None], source: str, what: str,
                  columns: Sequence[str] = ("text", "label"), arrays: Sequence[str] = ("keys",),
                  format: int = FORMAT) -> Cached:
    """The cache folder of `source`, built first by `build(folder)` when absent or damaged."""
    cached = _open_cached(folder, columns, arrays, format)
    if cached is None:
        t0 = time.perf_counter()
        build(folder)
        cached = _open_cached(folder, columns, arrays, format)
        if cached is None:
            raise UserError(f"{folder}: the mapped copy of {source} could not be read back after writing it")
        # DEBUG: the CLI never showed this line (no handler printed INFO); --verbose does
        logger.debug("data.storage mapped: %s %s of %s streamed into %s in %.1f s", f"{cached.meta['rows']:,}", what,
                 source, folder, time.perf_counter() - t0)
    return cached


def _open_cached(folder: Path, columns: Sequence[str], arrays: Sequence[str], format: int) -> Cached | None:
    """A complete cache folder, or None when absent or damaged (a cache is rebuilt, never trusted
    half-written)."""
    import pyarrow as pa
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        mapping = Mapping(folder / "rows.arrow")
        table = mapping.table()
        found = {a: np.load(folder / f"{a}.npy", mmap_mode="r", allow_pickle=False) for a in arrays}
        if (not isinstance(meta, dict) or meta.get("format") != format or table.num_rows != meta["rows"]
                or table.column_names != list(columns)
                or any(len(v) != meta["rows"] or v.dtype != np.uint64 for v in found.values())):
            raise ValueError("inconsistent cache folder")
        return Cached(meta, table, found, mapping)
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as e:
        logger.warning("ignoring a damaged data cache %s (%s); rebuilding it", folder, e)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def build_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` fills a new folder, swapped in as `folder` when it returned; on any error
    (a refused row, an interrupt) nothing is left behind."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")  # one per process: ranks may build at once
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        try:
            fs.replace(tmp, folder)
        except OSError:  # another process finished the same folder first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- streaming readers ---------------------------------------------------------------------------

def chunk_reader(path: Path, source: str) -> Iterator[ColumnTable] | None:
    ext = path.suffix.lower()
    if ext in (".csv", ".tsv"):
        return csv_chunks(path, "," if ext == ".csv" else "\t", source)
    if ext == ".parquet":
        return parquet_chunks(path, source)
    if ext in (".jsonl", ".json"):
        with path.open("rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        return None if head.startswith(b"[") else jsonl_chunks(path, source)
    return None


def _chunk(columns: list[str], rows: list, value: Callable[[Any, str], Any], names: Callable[[int], str]) -> ColumnTable:
    return ColumnTable(columns, lambda c: [value(r, c) for r in rows], names)


def csv_chunks(path: Path, sep: str, source: str) -> Iterator[ColumnTable]:
    """The file's rows as pandas' `read_csv(dtype=str, keep_default_na=False)` reads them: blank lines
    skipped, short rows padded with missing cells; a header naming a column twice is refused (`check_header`)."""
    kind = "CSV" if sep == "," else "TSV"
    csv.field_size_limit(2**31 - 1)
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=sep)
            header = next((r for r in reader if r), None)
            if header is None:
                raise UserError(f"{source}: file is empty (no rows)")
            check_header(header, source)
            width, done, rows = len(header), 0, []

            def table(rows: list, first: int) -> ColumnTable:
                return _chunk(header, rows, lambda r, c: r[pos[c]] if pos[c] < len(r) else None,
                              lambda i: f"row {first + i + 1}")
            pos = {c: j for j, c in enumerate(header)}
            for rec in reader:
                if not rec:
                    continue
                if len(rec) > width:
                    raise UserError(f"{source}: not valid {kind} (Error tokenizing data. C error: Expected {width} "
                                    f"fields in line {reader.line_num}, saw {len(rec)})")
                rows.append(rec)
                if len(rows) == CHUNK_ROWS:
                    yield table(rows, done)
                    done, rows = done + len(rows), []
            if rows:
                yield table(rows, done)
            elif done == 0:
                raise UserError(f"{source}: no data rows (only a header)")
    except UnicodeDecodeError:
        read_utf8(path, source)  # raises the error naming the line and byte
        raise
    except csv.Error as e:
        raise UserError(f"{source}: not valid {kind} ({e})") from None


def jsonl_chunks(path: Path, source: str, opener: Callable[[], Any] | None = None,
                  empty: str = "file is empty (no rows)", bad_utf8: Callable[[], Any] | None = None) -> Iterator[ColumnTable]:
    """One JSON object per line, blank lines skipped; columns are the keys seen in the first chunk
    (a column that appears only later is not offered as a candidate). `opener` opens the bytes
    (default: the file itself; a gzip reader for `.gz`), `bad_utf8` raises the error naming the
    bad byte when a line is not UTF-8."""
    records: list[dict] = []
    lines: list[int] = []
    columns: list[str] = []
    seen: set[str] = set()

    def table() -> ColumnTable:
        at = list(lines)
        return _chunk(list(columns), list(records), lambda r, c: r.get(c), lambda i: f"line {at[i]}")
    any_rows = False
    with (opener or (lambda: path.open("rb")))() as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                (bad_utf8 or (lambda: read_utf8(path, source)))()
                raise
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{source}: line {lineno} is not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise UserError(f"{source}: line {lineno} is a JSON {type(rec).__name__}, expected an object")
            if not any_rows:
                for k in rec:
                    if k not in seen:
                        seen.add(k)
                        columns.append(k)
            records.append(rec)
            lines.append(lineno)
            if len(records) == CHUNK_ROWS:
                yield table()
                any_rows, records, lines = True, [], []
    if records:
        yield table()
    elif not any_rows:
        raise UserError(f"{source}: {empty}")


def parquet_chunks(path: Path, source: str) -> Iterator[ColumnTable]:
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(str(path))
        batches = pf.iter_batches(batch_size=CHUNK_ROWS)
        done = 0
        for batch in batches:
            df = batch.to_pandas()
            first = done
            cols = [str(c) for c in df.columns]
            by_name = dict(zip(cols, df.columns))
            yield ColumnTable(cols, lambda c, df=df: df[by_name[c]].tolist(), lambda i, first=first: f"row {first + i + 1}")
            done += len(df)
    except UserError:
        raise
    except Exception as e:  # pyarrow raises several unrelated types for a damaged file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{source}: not a readable Parquet file ({msg})") from None
    if done == 0:
        raise UserError(f"{source}: file is empty (no rows)")
