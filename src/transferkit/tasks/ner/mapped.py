"""Tagged (NER) data larger than memory: a file streamed into a memory-mapped Arrow cache.

The sentence-classification twin is `mapped.py`; this is the same idea for token lists. With
`data.storage=mapped` (or `auto` and a file over `AUTO_BYTES`, 16 MB) a CoNLL, JSON-lines or
Parquet file (and the text formats gzipped) is read `CHUNK_SENTENCES` sentences at a time through
the in-memory reader's own pieces (`read.py` and `data.conll.conll_sentences`: the column choice and cell
checks of `_from_table`, `SchemeReader`'s IOB2 conversion), so the same rows are kept and the same
refusals name the same line. Each chunk is appended to `<cache>/tagged/<key>/rows.arrow` (tokens,
tags as small codes into the IOB2 tags seen, where the sentence starts); `keys.npy` and
`tag_keys.npy` hold 64-bit hashes of every sentence's tokens and tags, which is all that dedupe
and the overlap checks compare. The file's sha256, the name it was given by and the column choice
key the cache, so a second run on the same file skips parsing. A split is a `MappedTaggedSplit`:
row numbers into the table and a lookup from cache codes to the run's tag ids; its windows are
tokenized into a mapped file of their own (`tasks.mapped_windows`).

Not streamed (`load_mapped_tagged` returns None, the in-memory reader runs): one JSON array, a
saved `datasets` folder and a bundled dataset.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ...core.errors import UserError
from ...data import bundled
from ...data.conll import conll_sentences
from ...data.fingerprint import file_sha256
from ...data.mapped import CHUNK_ROWS, Mapping, jsonl_chunks, parquet_chunks, build_folder, open_or_build, take_rows
from ...data.tables import GZIP_ERRORS, file_extension, gzip_error, read_text_file
from .read import CONLL_EXTENSIONS, _from_table, sequence_hashes
from .schemes import SchemeReader

logger = logging.getLogger(__name__)

FORMAT = 1  # bump when the cached layout changes
# storage=auto maps tagged files larger than this. Lower than sentence rows' 64 MB: held in Python lists,
# tagged sentences cost ~35x their CoNLL size (a 40 MB file of 100,000 sentences grew peak RSS by 1.4 GB,
# benchmarks/data_memory.py --task ner), sentence rows ~10x theirs.
AUTO_BYTES = 16 * 2**20
CHUNK_SENTENCES = 20_000  # sentences per chunk read, checked and written
COLUMNS = ("tokens", "tags", "where")
ARRAYS = ("keys", "tag_keys")
_TABLES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")
STREAMED = CONLL_EXTENSIONS + tuple(e + ".gz" for e in CONLL_EXTENSIONS) + _TABLES


def wants_mapped_tagged(storage: str, source: str) -> bool:
    """Whether tagged `source` is read through the mapped path under `data.storage=storage`."""
    path = Path(source).expanduser()
    if storage == "memory" or not path.is_file() or file_extension(path) not in STREAMED:
        return False
    return storage == "mapped" or path.stat().st_size > AUTO_BYTES


def load_mapped_tagged(source: str, tokens_column: str | None = None, tags_column: str | None = None,
                       label_names: list[str] | None = None) -> "MappedTaggedTable | None":
    """`source` as a table over the mapped cache (built on first use); None for a file this path
    does not stream (one JSON array: the caller reads it in memory)."""
    path = Path(source).expanduser()
    chunks = _sentence_chunks(path, source, tokens_column, tags_column, label_names)
    if chunks is None:
        return None
    key = hashlib.sha256(json.dumps([FORMAT, file_sha256(path), source, tokens_column, tags_column,
                                     label_names]).encode()).hexdigest()[:20]
    cached = open_or_build(bundled.cache_dir() / "tagged" / key, lambda folder: _build(folder, chunks, source),
                           source, "sentences", COLUMNS, ARRAYS, FORMAT)
    meta = cached.meta
    return MappedTaggedTable(cached.table, np.arange(meta["rows"]), cached.arrays["keys"], cached.arrays["tag_keys"],
                             meta["tags"], source, meta["notes"], key, cached.mapping)


# ---- a table and its splits, read a chunk at a time ----------------------------------------------

class _Rows(Sequence):
    """One column of chosen rows of the cached table, each row turned into a Python value by
    `convert` (given a chunk's pyarrow array, it returns a list); nothing is read until asked for."""

    def __init__(self, column: Any, rows: np.ndarray, convert: Callable[[Any], list], mapping: Mapping) -> None:
        self.column, self.rows, self.convert, self.mapping = column, rows, convert, mapping

    @classmethod
    def of(cls, owner: Any, name: str, convert: Callable[[Any], list] | None = None) -> "_Rows":
        """Column `name` of `owner`'s rows (a mapped table or split), as Python values."""
        return cls(owner.table.column(name), owner.rows, convert or (lambda a: a.to_pylist()), owner.mapping)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return _Rows(self.column, self.rows[i], self.convert, self.mapping)
        return self.convert(take_rows(self.column, self.rows[[i]]))[0]

    def _read(self, rows: np.ndarray) -> list:
        out = self.convert(take_rows(self.column, rows))
        self.mapping.release()  # a pass over every row leaves no more of the file resident than a chunk
        return out

    def __iter__(self) -> Iterator[Any]:
        for s in range(0, len(self.rows), CHUNK_SENTENCES):
            yield from self._read(self.rows[s:s + CHUNK_SENTENCES])


def _flat_tags(column: Any, rows: np.ndarray, mapping: Mapping) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(tag codes of every token, the position in `rows` of its sentence) of `rows`, a chunk at a time."""
    import pyarrow.compute as pc
    for s in range(0, len(rows), CHUNK_ROWS):
        part = take_rows(column, rows[s:s + CHUNK_ROWS])
        yield (pc.list_flatten(part).to_numpy(zero_copy_only=False),
               pc.list_parent_indices(part).to_numpy(zero_copy_only=False) + s)
        mapping.release()


class MappedTaggedTable:
    """Sentences of a cached table (rows `rows`, in this order) with what the splits ask of a table
    (`tagged_read.TaggedTable`'s take / keys / counts / first_unknown); tokens and tags are read from
    the mapped file only where a step needs them."""

    def __init__(self, table: Any, rows: np.ndarray, keys: np.ndarray, tag_keys: np.ndarray, vocab: list[str],
                 source: str, notes: list[str], cache_key: str, mapping: Mapping) -> None:
        self.table, self.rows, self.mapping = table, np.asarray(rows, dtype=np.int64), mapping
        self._keys, self._tag_keys = keys, tag_keys  # [rows of the table] uint64, mapped
        self.vocab, self.source, self.notes, self.cache_key = vocab, source, list(notes), cache_key
        self._counts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, idx: Iterable[int]) -> "MappedTaggedTable":
        idx = np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx, dtype=np.int64)
        return MappedTaggedTable(self.table, self.rows[idx], self._keys, self._tag_keys, self.vocab, self.source,
                                 self.notes, self.cache_key, self.mapping)

    def keys(self) -> np.ndarray:
        return np.asarray(self._keys[self.rows])

    def tag_keys(self) -> np.ndarray:
        return np.asarray(self._tag_keys[self.rows])

    def code_counts(self) -> np.ndarray:
        """[codes] how many tokens of these sentences carry each cached tag."""
        if self._counts is None:
            counts = np.zeros(len(self.vocab), dtype=np.int64)
            for codes, _ in _flat_tags(self.table.column("tags"), self.rows, self.mapping):
                counts += np.bincount(codes, minlength=len(self.vocab))
            self._counts = counts
        return self._counts

    def entity_counts(self) -> Counter:
        counts = self.code_counts()
        out: Counter = Counter()
        for code, tag in enumerate(self.vocab):
            if tag.startswith("B-") and counts[code]:
                out[tag[2:]] += int(counts[code])
        return out

    def token_count(self) -> int:
        return int(self.code_counts().sum())

    def first_unknown(self, known: dict[str, int]) -> tuple[str, str, list[str]] | None:
        unknown = np.array([t not in known for t in self.vocab], dtype=bool)
        present = self.code_counts() > 0
        if not (unknown & present).any():
            return None
        for codes, sentence in _flat_tags(self.table.column("tags"), self.rows, self.mapping):
            hit = np.flatnonzero(unknown[codes])
            if len(hit):
                row = int(self.rows[sentence[hit[0]]])
                where = self.table.column("where")[row].as_py()
                types = sorted({t[2:] for t, u, p in zip(self.vocab, unknown, present) if u and p})
                return where, self.vocab[codes[hit[0]]], types
        return None

    @property
    def tokens(self) -> _Rows:
        return _Rows.of(self, "tokens")

    @property
    def where(self) -> _Rows:
        return _Rows.of(self, "where")

    def encode(self, index: dict[str, int], source: str) -> "MappedTaggedSplit":
        """The split of these rows with tag ids from `index` (every tag present is in it: the caller checked)."""
        lut = np.array([index.get(t, -1) for t in self.vocab], dtype=np.int64)
        return MappedTaggedSplit(self.table, self.rows, lut, source, self.cache_key, self.mapping)


class MappedTaggedSplit:
    """A split over the cache, read like `tagged.TaggedSplit`: `tokens`, `tags` (ids), `where` are
    sequences that read their rows a chunk at a time; `fingerprint()` names exactly these rows and
    tag ids (it keys the windows' token cache)."""

    def __init__(self, table: Any, rows: np.ndarray, lut: np.ndarray, source: str, cache_key: str,
                 mapping: Mapping) -> None:
        self.table, self.rows, self.lut, self.source, self.cache_key = table, rows, lut, source, cache_key
        self.mapping = mapping

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, idx: Sequence[int]) -> "MappedTaggedSplit":
        return MappedTaggedSplit(self.table, self.rows[np.asarray(idx, dtype=np.int64)], self.lut, self.source,
                                 self.cache_key, self.mapping)

    @property
    def tokens(self) -> _Rows:
        return _Rows.of(self, "tokens")

    @property
    def tags(self) -> _Rows:
        return _Rows.of(self, "tags", self._ids)

    @property
    def where(self) -> _Rows:
        return _Rows.of(self, "where")

    def _ids(self, part: Any) -> list[list[int]]:
        flat = self.lut[part.flatten().to_numpy(zero_copy_only=False)].tolist()
        offsets = (part.offsets.to_numpy() - part.offsets[0].as_py()).tolist()
        return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.cache_key.encode() + self.rows.tobytes() + self.lut.tobytes()).hexdigest()[:20]


class JoinedWords(Sequence):
    """The words of each sentence joined by spaces (the task's `texts`), read a chunk at a time."""

    def __init__(self, tokens: _Rows) -> None:
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return JoinedWords(self.tokens[i])
        return " ".join(self.tokens[i])

    def __iter__(self) -> Iterator[str]:
        return (" ".join(words) for words in self.tokens)


# ---- building the cache --------------------------------------------------------------------------

def _build(folder: Path, chunks: Iterator[tuple[list, list, list, list[str]]], source: str) -> None:
    """Every chunk of (tokens, IOB2 tags, where, notes) into a new cache folder, swapped in when complete."""
    import pyarrow as pa
    schema = pa.schema([("tokens", pa.list_(pa.string())), ("tags", pa.list_(pa.int16())), ("where", pa.string())])

    def write(tmp: Path) -> None:
        vocab: dict[str, int] = {}
        keys, tag_keys, notes, rows = [], [], [], 0
        with pa.OSFile(str(tmp / "rows.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for tokens, tags, where, chunk_notes in chunks:
                notes = chunk_notes  # the reader's notes so far; the last chunk's hold them all
                codes = [[vocab.setdefault(t, len(vocab)) for t in sent] for sent in tags]
                if len(vocab) > np.iinfo(np.int16).max:
                    raise UserError(f"{source}: more than {np.iinfo(np.int16).max:,} distinct tags; "
                                    "is the tags column a tag per token?")
                writer.write_batch(pa.record_batch([pa.array(tokens, schema.field("tokens").type),
                                                    pa.array(codes, schema.field("tags").type),
                                                    pa.array(where, pa.string())], schema=schema))
                keys.append(sequence_hashes(tokens))
                tag_keys.append(sequence_hashes(tags))
                rows += len(tokens)
        if rows == 0:
            raise UserError(f"{source}: file is empty (no sentences)")
        np.save(tmp / "keys.npy", np.concatenate(keys), allow_pickle=False)
        np.save(tmp / "tag_keys.npy", np.concatenate(tag_keys), allow_pickle=False)
        meta = {"format": FORMAT, "source": Path(source).name, "rows": rows, "tags": list(vocab), "notes": notes}
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    build_folder(folder, write)


def _sentence_chunks(path: Path, source: str, tokens_column: str | None, tags_column: str | None,
                     label_names: list[str] | None) -> Iterator[tuple[list, list, list, list[str]]] | None:
    """Chunks of (tokens, IOB2 tags, where each sentence starts, the notes so far) of a streamable
    file; None for one JSON array (read in memory)."""
    ext = file_extension(path)
    gz = ext.endswith(".gz")
    if ext.removesuffix(".gz") in CONLL_EXTENSIONS:
        return _conll_chunks(path, source, gz)
    if ext == ".parquet":
        tables = parquet_chunks(path, source)
    else:
        with _open_bytes(path, gz) as f:
            head = _gzip_read(lambda: f.read(4096), source) if gz else f.read(4096)
        if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
            return None
        tables = jsonl_chunks(path, source, opener=lambda: _open_bytes(path, gz),
                               empty="file is empty (no sentences)", bad_utf8=lambda: read_text_file(path, source))
    return _table_chunks(tables, source, tokens_column, tags_column, label_names, gz)


def _table_chunks(tables: Iterator[Any], source: str, tokens_column: str | None, tags_column: str | None,
                  label_names: list[str] | None, gz: bool) -> Iterator[tuple[list, list, list, list[str]]]:
    scheme = SchemeReader(source)
    first_notes: list[str] | None = None
    for table in _gzip_errors(tables, source) if gz else tables:
        raw = _from_table(table, source, tokens_column, tags_column, label_names)
        if first_notes is None:
            first_notes = list(raw.notes)  # the column choice, made on the first chunk
        tags = [scheme.convert(sent, lambda t, s=s: raw.at(s, t)) for s, sent in enumerate(raw.tags)]
        yield raw.tokens, tags, raw.where, first_notes + scheme.notes()


def _conll_chunks(path: Path, source: str, gz: bool) -> Iterator[tuple[list, list, list, list[str]]]:
    scheme = SchemeReader(source)
    header: list[str] = []
    tokens, tags, where = [], [], []

    def lines() -> Iterator[str]:
        with _open_bytes(path, gz) as f:
            for n, raw in enumerate(_gzip_errors(f, source) if gz else f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    read_text_file(path, source)  # raises the error naming the line and byte
                    raise
                yield line.removeprefix("\ufeff") if n == 1 else line
    for toks, raw_tags, start in conll_sentences(lines(), source, header):
        tokens.append(toks)
        tags.append(scheme.convert(raw_tags, lambda t, start=start: f"line {start + t}"))
        where.append(f"line {start}")
        if len(tokens) == CHUNK_SENTENCES:
            yield tokens, tags, where, header + scheme.notes()
            tokens, tags, where = [], [], []
    if tokens:
        yield tokens, tags, where, header + scheme.notes()


def _open_bytes(path: Path, gz: bool) -> Any:
    return gzip.open(path, "rb") if gz else path.open("rb")


def _gzip_read(read: Callable[[], bytes], source: str) -> bytes:
    try:
        return read()
    except GZIP_ERRORS as e:
        raise gzip_error(source, e) from None


def _gzip_errors(items: Iterable[Any], source: str) -> Iterator[Any]:
    """`items` (read from a gzip stream) with a damaged stream turned into the in-memory reader's error."""
    it = iter(items)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except GZIP_ERRORS as e:
            raise gzip_error(source, e) from None
        yield item
