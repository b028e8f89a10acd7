"""Token-classification (NER) data: sentences as token lists with one tag per token.

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
(S-X / E-X as well) are all read as IOB2 (`to_iob2`); repairs are kept as notes.

`prepare_tagged_splits` mirrors `prepare.prepare_splits`: one file split by sentence
(seeded shuffle, not stratified) or explicit train/test(/validation) files, dedupe, limit,
then integer tag ids over `label_names` ("O", then B-T, I-T for each entity type).

Every problem the user can fix is a one-line `UserError` naming the file and the line
(text and JSON lines files), record (a JSON array) or row (Parquet, datasets folders).
"""
from __future__ import annotations

import gzip
import random
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import DataConfig
from ..errors import UserError
from ..registry import DATASETS
from . import bundled
from .listing import clip, summarise
from .load import _hf_train_split, _is_missing, _json_table, _parquet_table, _read_utf8, _Table, decode_utf8, hf_split_names
from .prepare import _hf_explicit_splits, _same_file
from .split import SPLITS, split_sizes

CONLL_EXTENSIONS = (".conll", ".txt", ".bio", ".iob", ".tsv")
TABLE_EXTENSIONS = (".jsonl", ".json", ".parquet")
GZIP_TABLE_EXTENSIONS = (".jsonl.gz", ".json.gz")
TOKENS_CANDIDATES = ("tokens", "words")
TAGS_CANDIDATES = ("tags", "ner_tags", "ner", "labels")
DOCSTART = "-DOCSTART-"
MIN_SENTENCES = 2  # per split: one sentence cannot be both trained on and checked against
VALIDATION_CARVE = (0.9, 0.0, 0.1)  # without a validation file, 10% of training becomes validation

_COLUMNS = re.compile(r"[ \t]+")  # CoNLL columns; other Unicode spaces may sit inside a token
_HEADER_TOKEN = ("token", "tokens", "word", "words")
_HEADER_TAG = ("tag", "tags", "label", "labels", "ner", "ner_tag", "ner_tags")
_SCHEME = "expected IOB2 (B-X / I-X / O) or IOBES (S-X / E-X as well)"


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
class TaggedSplits:
    """The three splits plus the tag vocabulary and a summary for logs and reports."""

    label_names: list[str]  # "O", then B-T, I-T for each entity type in sorted order
    entity_types: list[str]
    train: TaggedSplit
    validation: TaggedSplit
    test: TaggedSplit
    summary: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def __getitem__(self, name: str) -> TaggedSplit:
        if name not in SPLITS:
            raise KeyError(name)
        return getattr(self, name)


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
            hint = f" (nor a bundled tagged dataset: {summarise(bundled.tagged_names(), 10)})"
        raise UserError(f"{role} file not found: {source}{hint}")
    if path.is_dir():
        split = _hf_train_split(path)
        name = f"{source} [{split}]" if split else source
        return _finish(_from_table(_hf_tagged_table(path, split), name, tokens_column, tags_column, label_names), name)
    ext = _extension(path)
    if ext in CONLL_EXTENSIONS or ext in tuple(e + ".gz" for e in CONLL_EXTENSIONS):
        return _finish(_read_conll(path, source), source)
    if ext not in TABLE_EXTENSIONS + GZIP_TABLE_EXTENSIONS:
        raise UserError(f"{source}: unsupported file type {ext or '(no extension)'!r} for tagged data; use "
                        f"{', '.join(CONLL_EXTENSIONS)} (a token and its tag per line), "
                        f"{', '.join(TABLE_EXTENSIONS)}, one of the text formats gzipped (.jsonl.gz, "
                        ".conll.gz, ...) or a datasets folder")
    if ext == ".parquet":
        table = _parquet_table(path, source)
    else:
        text = _read_text(path, source)
        if not text.strip():
            raise UserError(f"{source}: file is empty (no sentences)")
        table = _json_table(text, source)
    return _finish(_from_table(table, source, tokens_column, tags_column, label_names), source)


def load_tagged_splits(path: str | Path, tokens_column: str | None = None, tags_column: str | None = None,
                       label_names: list[str] | None = None) -> dict[str, TaggedTable]:
    """Every split of a saved `DatasetDict` folder, by split name."""
    names = hf_split_names(path)
    if names is None:
        raise UserError(f"{path}: not a saved DatasetDict folder (no dataset_dict.json)")
    out = {}
    for split in names:
        name = f"{path} [{split}]"
        table = _hf_tagged_table(Path(path).expanduser(), split)
        out[split] = _finish(_from_table(table, name, tokens_column, tags_column, label_names), name)
    return out


def _bundled_path(name: str) -> Path:
    """The shipped file of a bundled tagged dataset; a one-line error for any other bundled name."""
    ds = DATASETS.get(name)
    if getattr(ds, "task", None) != "ner":
        raise UserError(f"{name} is a bundled sentence-classification dataset (text/label rows), not tagged "
                        f"sentences; bundled tagged datasets for --task ner: {summarise(bundled.tagged_names(), 10)}")
    if not ds.path.is_file():
        raise ds.missing()
    return ds.path


def _extension(path: Path) -> str:
    """The lowercased extension, with `.gz` kept together with the one before it (`.jsonl.gz`)."""
    suffixes = [x.lower() for x in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == ".gz":
        return suffixes[-2] + ".gz"
    return path.suffix.lower()


def _read_text(path: Path, source: str) -> str:
    """A text file as UTF-8 (see `load._read_utf8`); `.gz` files are decompressed first."""
    if path.suffix.lower() != ".gz":
        return _read_utf8(path, source)
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut-off file is EOFError
        raise UserError(f"{source}: not a readable gzip file ({str(e) or type(e).__name__})") from None
    return decode_utf8(raw, source, " (of the decompressed text)")


def _read_conll(path: Path, source: str) -> _Raw:
    """One token per line, tag in the last column, blank lines between sentences."""
    text = _read_text(path, source)
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    starts: list[int] = []
    notes: list[str] = []
    cur_tokens: list[str] = []
    cur_tags: list[str] = []
    seen_content = False

    def flush() -> None:
        if cur_tokens:
            tokens.append(list(cur_tokens))
            tags.append(list(cur_tags))
            cur_tokens.clear()
            cur_tags.clear()

    for n, line in enumerate(text.split("\n"), 1):
        stripped = line.strip(" \t\r")
        if not stripped:
            flush()
            continue
        cols = _COLUMNS.split(stripped)
        if cols[0] == DOCSTART:
            flush()
            continue
        first = not seen_content
        seen_content = True
        if first and len(cols) > 1 and cols[0].lower() in _HEADER_TOKEN and cols[-1].lower() in _HEADER_TAG:
            notes.append(f"{source}: line {n} read as a header ({clip(stripped)!r}), not as a token")
            continue
        if len(cols) == 1:
            raise UserError(f"{source}: line {n} has one column ({clip(repr(cols[0]))}); expected a token and "
                            "its tag separated by whitespace (the tag in the last column), or a blank line between "
                            "sentences")
        if not cur_tokens:
            starts.append(n)
        cur_tokens.append(cols[0])
        cur_tags.append(cols[-1])
    flush()
    if not tokens:
        raise UserError(f"{source}: file is empty (no sentences)")
    # A sentence's tokens sit on consecutive lines, so token t of sentence s is on line start + t.
    return _Raw(tokens, tags, [f"line {n}" for n in starts], lambda s, t: f"line {starts[s] + t}", notes)


def _hf_tagged_table(path: Path, split: str | None) -> _Table:
    """A saved dataset as a `_Table`; `class_names` holds the names of ClassLabel sequence columns."""
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
    return _Table(list(ds.column_names), lambda c: list(ds[c]), lambda i: f"row {i + 1}", names)


def _pick(table: _Table, wanted: str | None, candidates: tuple[str, ...], what: str, option: str,
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


def _from_table(table: _Table, source: str, tokens_column: str | None, tags_column: str | None,
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
    if _is_missing(v):
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


# --- tag schemes ---------------------------------------------------------------------

def to_iob2(tags: list[str], where: str) -> list[str]:
    """IOB2, IOB1 or IOBES tags of one sentence as IOB2; `where` names the sentence in errors.

    S-X becomes B-X and E-X becomes I-X; an I-X (or E-X) that does not continue an entity
    of type X (after O, another type, or a closed E-/S- entity) starts one: B-X.
    """
    return _convert(tags, lambda t: f"{where}, token {t + 1}")[0]


def _convert(tags: list[str], at: Callable[[int], str]) -> tuple[list[str], list[int]]:
    """IOB2 tags plus the positions of entities that started with I-X / E-X (repaired to B-X)."""
    out: list[str] = []
    repaired: list[int] = []
    open_type: str | None = None  # the entity type the previous token leaves open, if any
    for t, tag in enumerate(tags):
        if tag == "O":
            out.append("O")
            open_type = None
            continue
        prefix, kind = tag[:2], tag[2:]
        if prefix not in ("B-", "I-", "E-", "S-") or not kind:
            raise UserError(f"unknown tag scheme: tag {clip(repr(tag))} at {at(t)}; {_SCHEME}")
        if prefix in ("B-", "S-") or open_type == kind:
            out.append(("B-" if prefix in ("B-", "S-") else "I-") + kind)
        else:
            out.append("B-" + kind)
            repaired.append(t)
        open_type = None if prefix in ("E-", "S-") else kind
    return out, repaired


def _finish(raw: _Raw, source: str) -> TaggedTable:
    """Convert every sentence to IOB2 and note the scheme found and the repairs made."""
    notes = list(raw.notes)
    iobes = any(tag[:2] in ("S-", "E-") for sent in raw.tags for tag in sent)
    converted: list[list[str]] = []
    repaired = 0
    first: str | None = None
    for s, sent in enumerate(raw.tags):
        tags, fixed = _convert(sent, lambda t, s=s: f"{source} {raw.at(s, t)}")
        if fixed and first is None:
            first = raw.at(s, fixed[0])
        repaired += len(fixed)
        converted.append(tags)
    if iobes:
        notes.append(f"{source}: tags are IOBES (S-/E- found); read as IOB2 (S-X -> B-X, E-X -> I-X)")
    if repaired:
        notes.append(f"{source}: {repaired:,} entit{'y' if repaired == 1 else 'ies'} started with I-X "
                     f"(IOB1 style{' or a broken E-X' if iobes else ''}; first at {first}); read as B-X")
    return TaggedTable(raw.tokens, converted, source, raw.where, notes)


def entity_counts(tags: list[list[str]]) -> Counter:
    """Entities per type in IOB2 tags (each entity starts with B-)."""
    return Counter(tag[2:] for sent in tags for tag in sent if tag.startswith("B-"))


# --- splits --------------------------------------------------------------------------

def prepare_tagged_splits(cfg: DataConfig, seed: int, log: Callable[[str], None] = print,
                          label_names: list[str] | None = None) -> TaggedSplits:
    """Load, deduplicate, split and encode the tagged data `cfg` describes.

    `cfg.text_column` names the tokens column, `cfg.label_column` the tags column;
    `label_names` names integer tag ids in JSON/Parquet sources. Like `prepare_splits`:
    `data.data` is split by `data.split` (seeded shuffle of sentences), or `data.train` +
    `data.test` (+ `data.validation`, else 10% of the training sentences) are used as given,
    as are the train/test(/validation) splits of a saved DatasetDict in `data.data`.
    `data.dedupe` removes repeated token sequences (the first kept) from what gets split;
    `data.limit` keeps the first N training sentences.
    """
    explicit = [k for k in SPLITS if getattr(cfg, k) is not None]
    if cfg.data is not None and explicit:
        raise UserError(f"give either data.data or data.train/validation/test; not both "
                        f"(data.data={clip(cfg.data, 60)}, data.{explicit[0]}={clip(getattr(cfg, explicit[0]), 60)})")
    cols = (cfg.text_column, cfg.label_column, label_names)
    report: dict | None = None
    whole: TaggedTable | None = None
    hf_splits = _hf_explicit_splits(cfg)
    if cfg.train is not None or hf_splits is not None:
        if hf_splits is not None:
            loaded = load_tagged_splits(Path(cfg.data).expanduser(), *cols)
            train, test, val = loaded["train"], loaded["test"], loaded.get("validation")
            mode = "dataset splits"
        else:
            if cfg.test is None:
                raise UserError("data.train is set but data.test is not; give a test file as well")
            train = load_tagged(cfg.train, *cols, role="train")
            test = load_tagged(cfg.test, *cols, role="test")
            val = load_tagged(cfg.validation, *cols, role="validation") if cfg.validation is not None else None
            mode = "files"
        _log_notes([train, val, test], log)
        for name, table in (("train", train), ("validation", val), ("test", test)):
            if table is not None and len(table) < MIN_SENTENCES:
                raise UserError(f"{name} data {table.source} has {len(table):,} sentence(s); "
                                f"need at least {MIN_SENTENCES}")
        if val is None:
            if cfg.dedupe:
                train, report = dedupe_sentences(train)
            parts = _shuffle_split(train, VALIDATION_CARVE, seed, report, carve=True)
            train, val = parts["train"], parts["test"]
            log(f"validation: no validation data given; using 10% of {train.source} ({len(val):,} sentences)")
        raws = {"train": train, "validation": val, "test": test}
    else:
        if cfg.validation is not None or cfg.test is not None:
            raise UserError("data.validation and data.test need data.train as well "
                            "(or leave them unset and split data.data)")
        if cfg.data is None:
            raise UserError("no data given: set data.data (a tagged file or saved dataset folder) or data.train")
        mode = "split"
        whole = load_tagged(cfg.data, *cols, role="data")
        _log_notes([whole], log)
        if cfg.dedupe:
            whole, report = dedupe_sentences(whole)
        raws = _shuffle_split(whole, cfg.split, seed, report)

    before_limit = len(raws["train"])
    if cfg.limit is not None and cfg.limit < before_limit:
        raws["train"] = _take(raws["train"], range(cfg.limit))
        if cfg.limit < MIN_SENTENCES:
            raise UserError(f"data.limit={cfg.limit} leaves {cfg.limit} training sentence(s); "
                            f"need at least {MIN_SENTENCES}")
    limited = cfg.limit if cfg.limit is not None and cfg.limit < before_limit else None

    entity_types = _entity_types(raws["train"], limited, report)
    label_names_out = ["O"] + [f"{p}-{t}" for t in entity_types for p in ("B", "I")]
    index = {name: i for i, name in enumerate(label_names_out)}
    whole_counts = entity_counts(whole.tags) if whole is not None else None
    encoded = {name: _encode(raws[name], name, index, raws["train"].source, whole_counts, limited)
               for name in SPLITS}
    summary = _summary(cfg, seed, mode, raws, label_names_out, entity_types, report, before_limit, limited)
    _log_summary(summary, log)
    return TaggedSplits(label_names_out, entity_types, encoded["train"], encoded["validation"], encoded["test"],
                        summary)


def dedupe_sentences(table: TaggedTable) -> tuple[TaggedTable, dict]:
    """One sentence per exact token sequence, the first occurrence (and its tags) kept."""
    first_tags: dict[tuple[str, ...], list[str]] = {}
    keep: list[int] = []
    conflicting = 0
    for i, (toks, tags) in enumerate(zip(table.tokens, table.tags)):
        key = tuple(toks)
        if key in first_tags:
            conflicting += first_tags[key] != tags
            continue
        first_tags[key] = tags
        keep.append(i)
    report = {"sentences_in": len(table), "sentences_out": len(keep),
              "repeats_removed": len(table) - len(keep), "repeats_with_other_tags": conflicting}
    return _take(table, keep), report


def _dedupe_text(report: dict) -> str:
    s = (f"{report['sentences_in']:,} sentences -> {report['sentences_out']:,}: "
         f"{report['repeats_removed']:,} repeated token sequences removed (the first kept)")
    if report["repeats_with_other_tags"]:
        s += f"; {report['repeats_with_other_tags']:,} of them had other tags than the kept one"
    return s


def _take(table: TaggedTable, idx) -> TaggedTable:
    idx = list(idx)
    return TaggedTable([table.tokens[i] for i in idx], [table.tags[i] for i in idx], table.source,
                       [table.where[i] for i in idx], list(table.notes))


def _shuffle_split(table: TaggedTable, fractions, seed: int, report: dict | None,
                   carve: bool = False) -> dict[str, TaggedTable]:
    """Seeded random split of sentences into train/validation/test; each nonempty part >= 2 sentences.

    The parts keep the shuffled order, so `data.limit` afterwards is a random subsample.
    """
    n = len(table)
    sizes = dict(zip(SPLITS, split_sizes(n, fractions)))
    desc = "/".join(f"{f:g}" for f in fractions)
    removed = ""
    if report is not None and report["repeats_removed"]:
        removed = f" after dedupe removed {report['repeats_removed']:,} repeats (data.dedupe=false keeps them)"
    for name in SPLITS:
        if name == "validation" and fractions[1] == 0:
            continue  # an empty validation split was asked for (or, carving, none is made)
        if sizes[name] < MIN_SENTENCES:
            if carve and name == "test":  # the carved part becomes the validation split
                raise UserError(f"{table.source}: {n:,} training sentence(s){removed} leave {sizes[name]:,} for "
                                f"validation (10% is carved off when no data.validation is given); need at least "
                                f"{MIN_SENTENCES}: give data.validation or more sentences")
            raise UserError(f"{table.source}: {n:,} sentence(s){removed} are too few for split {desc}: the {name} "
                            f"split would get {sizes[name]:,}; need at least {MIN_SENTENCES} per split")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    out: dict[str, TaggedTable] = {}
    start = 0
    for name in SPLITS:
        out[name] = _take(table, order[start:start + sizes[name]])
        start += sizes[name]
    return out


def _entity_types(train: TaggedTable, limit: int | None, report: dict | None) -> list[str]:
    types = sorted(entity_counts(train.tags))
    if not types:
        after = f" after data.limit={limit}" if limit is not None else ""
        raise UserError(f"training data {train.source} has no entities{after} (every tag is O); "
                        "a tagger needs at least one B-X tag to learn from")
    return types


def _encode(table: TaggedTable, split: str, index: dict[str, int], train_source: str,
            whole_counts: Counter | None, limit: int | None) -> TaggedSplit:
    ids: list[list[int]] = []
    for tags, where in zip(table.tags, table.where):
        row = []
        for tag in tags:
            if tag not in index:
                kind = tag[2:]
                unseen = sorted({t[2:] for sent in table.tags for t in sent if t != "O" and t not in index})
                more = f"; nor do {len(unseen) - 1:,} other {split} entity types" if len(unseen) > 1 else ""
                hint = ""
                if whole_counts is not None:
                    n = whole_counts[kind]
                    hint = f" ({n:,} entit{'y' if n == 1 else 'ies'} in all of {table.source})"
                after = f" after data.limit={limit}" if limit is not None else ""
                types = sorted({k[2:] for k in index if k != "O"})
                raise UserError(f"entity type {clip(repr(kind))} in the {split} split ({table.source} {where}) does "
                                f"not occur in the training data ({train_source}){after}{hint}{more}; "
                                f"training entity types ({len(types):,}): {summarise(types)}")
            row.append(index[tag])
        ids.append(row)
    return TaggedSplit([list(t) for t in table.tokens], ids, list(table.where), f"{table.source} ({split})")


def _log_notes(tables: list[TaggedTable | None], log: Callable[[str], None]) -> None:
    seen: set[str] = set()
    for table in tables:
        for note in (table.notes if table is not None else []):
            if note not in seen:
                seen.add(note)
                log(f"note: {note}")


def _summary(cfg: DataConfig, seed: int, mode: str, raws: dict[str, TaggedTable], label_names: list[str],
             entity_types: list[str], report: dict | None, before_limit: int, limit: int | None) -> dict:
    train_keys = {tuple(t) for t in raws["train"].tokens}
    counts = {s: entity_counts(raws[s].tags) for s in SPLITS}
    return {
        "mode": mode,
        "sources": {s: raws[s].source for s in SPLITS},
        "seed": seed,
        "split": list(cfg.split) if mode == "split" else None,
        "sizes": {s: len(raws[s]) for s in SPLITS},
        "tokens": {s: sum(len(t) for t in raws[s].tokens) for s in SPLITS},
        "entities": {s: {k: counts[s].get(k, 0) for k in entity_types} for s in SPLITS},
        "label_names": list(label_names),
        "entity_types": list(entity_types),
        "dedupe": report,
        "limit": limit,
        "train_sentences_before_limit": before_limit,
        # Sentences also in training score memory, not generalisation.
        "overlap_with_train": {s: sum(tuple(t) in train_keys for t in raws[s].tokens) for s in ("validation", "test")},
        "identical_to_train": [s for s in ("validation", "test") if mode == "files" and getattr(cfg, s) is not None
                               and _same_file(cfg.train, getattr(cfg, s))],
    }


def _log_summary(summary: dict, log: Callable[[str], None]) -> None:
    src = summary["sources"]
    log(f"data: {src['train']}" if summary["mode"] == "split" else
        "data: " + ", ".join(f"{s} {src[s]}" for s in SPLITS))
    if summary["dedupe"] is not None:
        log(f"dedupe: {_dedupe_text(summary['dedupe'])}")
    sizes, tokens = summary["sizes"], summary["tokens"]
    how = (f"seed {summary['seed']}, fractions {'/'.join(f'{f:g}' for f in summary['split'])}"
           if summary["split"] else summary["mode"])
    log(f"split: train {sizes['train']:,} | validation {sizes['validation']:,} | test {sizes['test']:,} "
        f"sentences ({how})")
    log(f"tokens: train {tokens['train']:,} | validation {tokens['validation']:,} | test {tokens['test']:,}")
    if summary["limit"] is not None:
        log(f"limit: using the first {summary['limit']:,} of {summary['train_sentences_before_limit']:,} "
            "training sentences")
    types = summary["entity_types"]
    width = max(len("entity"), *(len(t) for t in types))
    counts = summary["entities"]
    cols = [max(len(s), *(len(f"{counts[s].get(t, 0):,}") for t in types)) for s in SPLITS]
    log("  " + "entity".ljust(width) + "".join(f"  {s:>{w}}" for s, w in zip(SPLITS, cols)))
    for t in types:
        log("  " + t.ljust(width) + "".join(f"  {counts[s].get(t, 0):>{w},}" for s, w in zip(SPLITS, cols)))
    memory = "scores on them measure memory, not generalisation"
    for s, k in summary["overlap_with_train"].items():
        if s in summary["identical_to_train"]:
            log(f"warning: the {s} file {src[s]} is identical to the training file {src['train']}; {memory}")
        elif k:
            log(f"warning: {k:,} of {sizes[s]:,} {s} sentences also occur in the training data; {memory}")
