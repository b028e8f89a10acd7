"""Windows of a mapped tagged split (`data.mapped_tagged`) in a memory-mapped Arrow file.

`encode_mapped` runs `token_spans.encode_words` over `CHUNK` sentences at a time, so the windows,
labels and word ownership are exactly those of the in-memory path, and appends them to
`<cache>/tokenized/windows-<key>.arrow` (input_ids, labels, first_pos, first_word per window; the
window's sentence and start). The split's rows and tag ids, the tokenizer, `max_length` and the
stride key the file, so a second run tokenizes nothing. `MappedWindows` reads it back as an
`EncodedWindows` whose per-window lists are mapped columns: training and evaluation batch from it
without holding the token ids in memory.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Any, Iterator

import numpy as np

from ...core import fs
from ...data import bundled
from ...data.corpus import TokenCache, tokenizer_fingerprint
from .spans import EncodedWindows, encode_words

logger = logging.getLogger(__name__)

CHUNK = 10_000  # sentences tokenized and written at a time
_LISTS = ("input_ids", "labels", "first_pos", "first_word")


class _Pairs(Sequence):
    """first_token of a mapped file: per window, (position, word) of each word it owns."""

    def __init__(self, pos: Any, word: Any) -> None:
        self.pos, self.word = pos, word

    def __len__(self) -> int:
        return len(self.pos)

    def __getitem__(self, i: Any) -> list[tuple[int, int]]:
        return list(zip(self.pos[i].tolist(), self.word[i].tolist()))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return (self[i] for i in range(len(self)))


class MappedWindows(EncodedWindows):
    """`EncodedWindows` over a mapped file (rows are int32 numpy views). It holds what training and
    evaluation read; `pieces` and `content_end`, which only prediction on raw text needs, stay empty."""

    def __init__(self, path: Any) -> None:
        from datasets import Dataset

        ds = Dataset.from_file(str(path))
        cols = {name: TokenCache(path, name, ds) for name in _LISTS}
        sentence = np.asarray(ds.data.table.column("sentence").to_numpy())
        per_sentence = np.bincount(sentence) if len(sentence) else np.zeros(0, np.int64)
        super().__init__(input_ids=cols["input_ids"], labels=cols["labels"], sentence=sentence,
                         first_token=_Pairs(cols["first_pos"], cols["first_word"]),
                         n_split=int((per_sentence > 1).sum()), has_labels=True,
                         start=np.asarray(ds.data.table.column("start").to_numpy()))
        self.path = path

    def lengths(self) -> list[int]:
        return self.input_ids.row_lengths().tolist()

    def n_sentences(self) -> int:
        return int(self.sentence.max()) + 1 if len(self.sentence) else 0


def encode_mapped(tokenizer: Any, split: Any, max_length: int, stride: int) -> MappedWindows:
    """The windows of mapped split `split` (a `MappedTaggedSplit`), built once per rows, tokenizer,
    max_length and stride."""
    from datasets import Features
    from datasets import Sequence as Seq
    from datasets import Value
    from datasets.arrow_writer import ArrowWriter

    key = hashlib.sha256(f"{split.fingerprint()}|{tokenizer_fingerprint(tokenizer)}|{max_length}|{stride}"
                         .encode()).hexdigest()[:20]
    path = bundled.cache_dir() / "tokenized" / f"windows-{key}.arrow"
    if path.is_file():
        try:
            found = MappedWindows(path)
            if found.n_sentences() == len(split):
                return found
            raise ValueError(f"{found.n_sentences()} sentences, expected {len(split)}")
        except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt
            logger.warning("ignoring a damaged token cache %s (%s); rebuilding it", path, e)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    feats = Features({**{name: Seq(Value("int32")) for name in _LISTS}, "sentence": Value("int64"),
                      "start": Value("int64")})
    writer = ArrowWriter(path=str(tmp), features=feats)
    done = False
    try:
        tokens, tags = split.tokens, split.tags
        for s in range(0, len(split), CHUNK):
            enc = encode_words(tokenizer, list(tokens[s:s + CHUNK]), list(tags[s:s + CHUNK]), max_length, stride,
                               first=s)
            writer.write_batch({"input_ids": enc.input_ids, "labels": enc.labels,
                                "first_pos": [[p for p, _ in f] for f in enc.first_token],
                                "first_word": [[w for _, w in f] for f in enc.first_token],
                                "sentence": [i + s for i in enc.sentence], "start": enc.start})
        writer.finalize()
        done = True
    finally:
        writer.close()
        if not done:
            tmp.unlink(missing_ok=True)
    fs.replace(tmp, path)
    return MappedWindows(path)
