"""Reading token-classification (NER) data: sentences as token lists with one tag per token.

Why a module of its own: sentence classification reads one label per row, while tagged data
carries one tag per token, comes in line-per-token text formats (CoNLL) as well as tables,
and in several tag schemes. Everything is normalised here, once, so the model side sees
only IOB2 tags and integer ids.

Sources (`load_tagged`):
  - CoNLL-style text (`.conll`, `.txt`, `.bio`, `.iob`, `.tsv`): one token per line,
    whitespace-separated columns, the token first and the tag last, a blank line between
    sentences; `-DOCSTART-` lines are skipped and a `token ... tag` header line is allowed.
  - `.jsonl` / `.json` (JSON lines or one array of objects) and `.parquet`: a tokens column
    (`tokens`, `words`) and a tags column (`tags`, `ner_tags`, ...), both lists per row.
    Tags are strings, or integer ids named by `label_names`.
  - a folder written by `datasets`' `save_to_disk` (its `train` split for a `DatasetDict`);
    a `Sequence(ClassLabel)` tags feature supplies the tag names itself.
  - any of the text formats gzip-compressed (`.jsonl.gz`, `.conll.gz`, ...).
  - a bundled tagged dataset name (`wiki-ner-silver`): a gzip JSON lines file shipped inside
    the package (`bundled.ShippedDataset`), read like any `.jsonl.gz` file under that name.

Tag schemes: IOB2 (B-X / I-X / O), IOB1 (an entity may start with I-X) and IOBES
(S-X / E-X as well) are all read as IOB2 (`tag_schemes`); repairs are kept as notes.

Every problem the user can fix is a one-line `UserError` naming the file and the line
(text and JSON lines files), record (a JSON array) or row (Parquet, datasets folders).
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ...core.errors import UserError
from ...core.registry import DATASETS
from ...data import bundled
from ...data.conll import conll_sentences
from ...data.listing import clip, summarise
from ...data.tables import (ColumnTable, dataset_dict_splits, file_extension, hf_train_split, is_missing, json_table,
                            parquet_table, read_text_file)
from .schemes import SchemeReader, entity_counts

CONLL_EXTENSIONS = (".conll", ".txt", ".bio", ".iob", ".tsv")
TABLE_EXTENSIONS = (".jsonl", ".json", ".parquet")
GZIP_TABLE_EXTENSIONS = (".jsonl.gz", ".json.gz")
TOKENS_CANDIDATES = ("tokens", "words")
TAGS_CANDIDATES = ("tags", "ner_tags", "ner", "labels")


@dataclass
class TaggedSplit:
    """One split: tokens, tag ids into `TaggedSplits.label_names`, and each sentence's location."""

    tokens: list[list[str]]
    tags: list[list[int]]
    where: list[str]
    source: str = ""  # the file the sentences came from, e.g. "train.conll (train)"

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class TaggedTable:
    """Sentences in source order: tokens with their IOB2 tags, and where each sentence starts."""

    tokens: list[list[str]]
    tags: list[list[str]]
    source: str
    where: list[str]  # per sentence, e.g. "line 12" or "row 3"
    notes: list[str] = field(default_factory=list)  # column choices, scheme conversion, repairs

    def __len__(self) -> int:
        return len(self.tokens)

    # What the splits need of a table, answered alike by the mapped one (`mapped_tagged.MappedTaggedTable`).
    def take(self, idx: Iterable[int]) -> "TaggedTable":
        idx = [int(i) for i in idx]
        return TaggedTable([self.tokens[i] for i in idx], [self.tags[i] for i in idx], self.source,
                           [self.where[i] for i in idx], list(self.notes))

    def keys(self) -> np.ndarray:
        """[n] uint64: a hash of each sentence's token sequence (dedupe and the overlap checks compare these)."""
        return sequence_hashes(self.tokens)

    def tag_keys(self) -> np.ndarray:
        return sequence_hashes(self.tags)

    def entity_counts(self) -> Counter:
        return entity_counts(self.tags)

    def token_count(self) -> int:
        return sum(len(t) for t in self.tokens)

    def first_unknown(self, known: dict[str, int]) -> tuple[str, str, list[str]] | None:
        """(where, tag) of the first tag not in `known`, and every such entity type; None when all are known."""
        first = next(((w, t) for tags, w in zip(self.tags, self.where) for t in tags if t not in known), None)
        if first is None:
            return None
        return first[0], first[1], sorted({t[2:] for sent in self.tags for t in sent if t not in known})

    def encode(self, index: dict[str, int], source: str) -> TaggedSplit:
        """These sentences with tag ids from `index` (every tag is in it: the caller checked)."""
        return TaggedSplit([list(t) for t in self.tokens], [[index[t] for t in tags] for tags in self.tags],
                           list(self.where), source)


def sequence_hashes(seqs: Iterable[Sequence[str]]) -> np.ndarray:
    """[n] uint64: a 64-bit BLAKE2 hash of each string sequence (its JSON form, so no two sequences
    share an encoding); two different sentences collide with probability about n^2 / 2^65."""
    blake = hashlib.blake2b
    return np.fromiter((int.from_bytes(blake(json.dumps(list(s), ensure_ascii=False).encode("utf-8"),
                                             digest_size=8).digest(), "little") for s in seqs), dtype=np.uint64)


@dataclass
class _Raw:
    """Sentences as read, tags not yet converted; `at(s, t)` names token t of sentence s."""

    tokens: list[list[str]]
    tags: list[list[str]]
    where: list[str]
    at: Callable[[int, int], str]
    notes: list[str] = field(default_factory=list)


# --- loading -------------------------------------------------------------------------

def load_tagged(source: str, tokens_column: str | None = None, tags_column: str | None = None,
                label_names: list[str] | None = None, *, role: str = "data") -> TaggedTable:
    """Read tagged sentences from `source` (see the module doc); tags come back as IOB2.

    `tokens_column` / `tags_column` pick the columns of a table (auto-detected when unset);
    `label_names` names integer tag ids (id i is `label_names[i]`); `role` names the source
    in "file not found" errors.
    """
    source = str(source)
    path = Path(source).expanduser()
    if not path.exists() and source in DATASETS:
        path = _bundled_path(source)
    if not path.exists():
        hint = ""
        if not path.suffix and "/" not in source:
            hint = f" (nor a bundled tagged dataset: {summarise(tagged_names(), 10)})"
        raise UserError(f"{role} file not found: {source}{hint}")
    if path.is_dir():
        split = hf_train_split(path)
        name = f"{source} [{split}]" if split else source
        return _finish(_from_table(_hf_tagged_table(path, split), name, tokens_column, tags_column, label_names), name)
    ext = file_extension(path)
    if ext in CONLL_EXTENSIONS or ext in tuple(e + ".gz" for e in CONLL_EXTENSIONS):
        return _finish(_read_conll(path, source), source)
    if ext not in TABLE_EXTENSIONS + GZIP_TABLE_EXTENSIONS:
        raise UserError(f"{source}: unsupported file type {ext or '(no extension)'!r} for tagged data; use "
                        f"{', '.join(CONLL_EXTENSIONS)} (a token and its tag per line), "
                        f"{', '.join(TABLE_EXTENSIONS)}, one of the text formats gzipped (.jsonl.gz, "
                        ".conll.gz, ...) or a datasets folder")
    if ext == ".parquet":
        table = parquet_table(path, source)
    else:
        text = read_text_file(path, source)
        if not text.strip():
            raise UserError(f"{source}: file is empty (no sentences)")
        table = json_table(text, source)
    return _finish(_from_table(table, source, tokens_column, tags_column, label_names), source)


def load_tagged_splits(path: str | Path, tokens_column: str | None = None, tags_column: str | None = None,
                       label_names: list[str] | None = None) -> dict[str, TaggedTable]:
    """Every split of a saved `DatasetDict` folder, by split name."""
    out = {}
    for split in dataset_dict_splits(path):
        name = f"{path} [{split}]"
        table = _hf_tagged_table(Path(path).expanduser(), split)
        out[split] = _finish(_from_table(table, name, tokens_column, tags_column, label_names), name)
    return out


def tagged_names() -> list[str]:
    """Names of the bundled tagged (NER) datasets, sorted."""
    return bundled.names_for_task("ner")


def _bundled_path(name: str) -> Path:
    """The shipped file of a bundled tagged dataset; a one-line error for any other bundled name."""
    ds = DATASETS.get(name)
    if getattr(ds, "task", None) != "ner":
        raise UserError(f"{name} is a bundled sentence-classification dataset (text/label rows), not tagged "
                        f"sentences; bundled tagged datasets for --task ner: {summarise(tagged_names(), 10)}")
    if not ds.path.is_file():
        raise ds.missing()
    return ds.path


def _read_conll(path: Path, source: str) -> _Raw:
    """One token per line, tag in the last column, blank lines between sentences."""
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    starts: list[int] = []
    notes: list[str] = []
    for toks, tgs, start in conll_sentences(read_text_file(path, source).split("\n"), source, notes):
        tokens.append(toks)
        tags.append(tgs)
        starts.append(start)
    if not tokens:
        raise UserError(f"{source}: file is empty (no sentences)")
    # A sentence's tokens sit on consecutive lines, so token t of sentence s is on line start + t.
    return _Raw(tokens, tags, [f"line {n}" for n in starts], lambda s, t: f"line {starts[s] + t}", notes)


def _hf_tagged_table(path: Path, split: str | None) -> ColumnTable:
    """A saved dataset as a `ColumnTable`; `class_names` holds the names of ClassLabel sequence columns."""
    import datasets

    shown = f"{path}{f' [{split}]' if split else ''}"
    try:
        ds = datasets.load_from_disk(str(path / split) if split else str(path))
    except Exception as e:  # datasets raises FileNotFoundError, ValueError, ArrowInvalid, ...
        raise UserError(f"{path}: could not load the saved dataset "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if len(ds) == 0:
        raise UserError(f"{shown}: dataset is empty (no rows)")
    names: dict[str, list[str]] = {}
    for col, feat in ds.features.items():
        inner = getattr(feat, "feature", None)  # Sequence(ClassLabel) / List(ClassLabel)
        if isinstance(inner, datasets.ClassLabel):
            names[col] = list(inner.names)
    return ColumnTable(list(ds.column_names), lambda c: list(ds[c]), lambda i: f"row {i + 1}", names)


def _pick(table: ColumnTable, wanted: str | None, candidates: tuple[str, ...], what: str, option: str,
          where: str) -> tuple[str, str | None]:
    """The column holding `what` (tokens or tags), plus a note when other candidates were present."""
    cols = table.columns
    flag = "--" + option.replace("_", "-")
    if wanted is not None:
        if wanted in cols:
            return wanted, None
        loose = [c for c in cols if c.strip().lower() == wanted.strip().lower()]
        if len(loose) == 1:
            return loose[0], None
        raise UserError(f"{where}: {what} column {clip(wanted)!r} not found; available columns: {summarise(cols)}")
    found = [c for cand in candidates for c in cols if c.strip().lower() == cand]
    if not found:
        raise UserError(f"{where}: no {what} column found (looked for {', '.join(candidates)}); available columns: "
                        f"{summarise(cols)}; set data.{option} ({flag})")
    chosen = found[0]
    others = [c for c in dict.fromkeys(found) if c != chosen]
    note = None
    if others:
        note = (f"{where}: using column {chosen!r} as the {what}; also present: {summarise(others, quote=True)} "
                f"(pick another with {flag} / data.{option})")
    return chosen, note


def _from_table(table: ColumnTable, source: str, tokens_column: str | None, tags_column: str | None,
                label_names: list[str] | None) -> _Raw:
    """Rows of list cells into sentences; integer tag ids are named here."""
    tcol, tnote = _pick(table, tokens_column, TOKENS_CANDIDATES, "tokens", "text_column", source)
    gcol, gnote = _pick(table, tags_column, TAGS_CANDIDATES, "tags", "label_column", source)
    if tcol == gcol:
        raise UserError(f"{source}: tokens and tags columns are both {clip(tcol)!r}")
    names = list(label_names) if label_names is not None else (table.class_names or {}).get(gcol)
    if names is not None and (not names or not all(isinstance(n, str) and n.strip() for n in names)):
        raise UserError(f"label_names must be a non-empty list of tag names (strings), got {clip(repr(names), 60)}")
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    for i, (tok_cell, tag_cell) in enumerate(zip(table.values(tcol), table.values(gcol))):
        row = table.row_name(i)
        toks = _list_cell(tok_cell, source, row, "tokens", tcol)
        tgs = _list_cell(tag_cell, source, row, "tags", gcol)
        _check_tokens(toks, source, row)
        if len(toks) != len(tgs):
            raise UserError(f"{source}: {row} has {len(toks):,} tokens but {len(tgs):,} tags; "
                            "each token needs exactly one tag")
        tokens.append(toks)
        tags.append([_tag_name(t, names, source, f"{row}, token {j + 1}", gcol) for j, t in enumerate(tgs)])
    rows = [table.row_name(i) for i in range(len(tokens))]
    return _Raw(tokens, tags, rows, lambda s, t: f"{rows[s]}, token {t + 1}", [n for n in (tnote, gnote) if n])


def _list_cell(v: Any, source: str, row: str, what: str, col: str) -> list:
    """A cell holding a list (JSON array, numpy array from Parquet, list from datasets) as a list."""
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, list):
        return v
    if is_missing(v):
        raise UserError(f"{source}: {row} has no {what} (column {clip(col)!r} is missing or null)")
    hint = " (split the sentence into a list of tokens)" if isinstance(v, str) and what == "tokens" else ""
    raise UserError(f"{source}: {what} column {clip(col)!r} holds a {type(v).__name__} at {row}, "
                    f"expected a list of {what}{hint}")


def _check_tokens(tokens: list, source: str, row: str) -> None:
    if not tokens:
        raise UserError(f"{source}: {row} is an empty sentence (no tokens); remove it")
    for j, tok in enumerate(tokens):
        if not isinstance(tok, str):
            raise UserError(f"{source}: {row}, token {j + 1} is a {type(tok).__name__} ({clip(repr(tok), 30)}), "
                            "not a string; tokens must be strings")
        if not tok.strip():
            raise UserError(f"{source}: {row}, token {j + 1} is empty; remove it or the sentence")


def _tag_name(tag: Any, names: list[str] | None, source: str, at: str, col: str) -> str:
    """A tag as a string: strings stripped, integer ids looked up in `names`."""
    if isinstance(tag, str):
        if not tag.strip():
            raise UserError(f"{source}: {at}: the tag is empty")
        return tag.strip()
    if isinstance(tag, int) and not isinstance(tag, bool):
        if names is None:
            raise UserError(f"{source}: tags column {clip(col)!r} holds integer ids (first at {at}) and no tag names "
                            "are known; pass label_names (the tag of id 0, 1, ...) or store the tags as strings")
        if not 0 <= tag < len(names):
            raise UserError(f"{source}: {at}: tag id {tag} is out of range for the {len(names):,} tag names "
                            f"(ids 0..{len(names) - 1}: {summarise(names)})")
        return names[tag].strip()
    raise UserError(f"{source}: {at}: tag {clip(repr(tag), 30)} is a {type(tag).__name__}; "
                    "expected a tag string or an integer id")


def _finish(raw: _Raw, source: str) -> TaggedTable:
    """Convert every sentence to IOB2 and note the scheme found and the repairs made."""
    scheme = SchemeReader(source)
    converted = [scheme.convert(sent, lambda t, s=s: raw.at(s, t)) for s, sent in enumerate(raw.tags)]
    return TaggedTable(raw.tokens, converted, source, raw.where, list(raw.notes) + scheme.notes())
