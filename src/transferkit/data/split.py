"""Deduplication and the seeded, stratified train/validation/test split."""
from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..core.errors import UserError
from .listing import clip

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class DedupeReport:
    """What `dedupe` removed. rows_in = rows_out + duplicates_removed + conflict_rows_removed."""

    rows_in: int
    rows_out: int
    duplicates_removed: int  # extra rows of a kept text
    conflicts_removed: int  # distinct texts dropped because their labels tie
    conflict_rows_removed: int  # all rows of those texts
    relabelled: int  # kept texts whose rows disagreed; the majority label won

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        s = (f"{self.rows_in:,} rows -> {self.rows_out:,}: {self.duplicates_removed:,} duplicate rows removed, "
             f"{self.conflicts_removed:,} texts with tied labels dropped ({self.conflict_rows_removed:,} rows)")
        if self.relabelled:
            s += f", {self.relabelled:,} texts whose rows disagreed given one label (the majority; for numbers, the mean)"
        return s


def text_key(text: str | tuple[str, ...]) -> str:
    """The form two texts are compared in: `dedupe` keeps one row per key, overlap checks match on it (a
    pair of texts is one key: both parts, stripped, joined by the unit separator)."""
    if isinstance(text, tuple):
        return "\x1f".join(t.strip() for t in text)
    return text.strip()


def text_hashes(texts: Iterable[str]) -> np.ndarray:
    """[n] uint64: a 64-bit BLAKE2 hash of each text's `text_key`, for comparing texts without holding them."""
    blake = hashlib.blake2b
    return np.fromiter((int.from_bytes(blake(text_key(t).encode("utf-8"), digest_size=8).digest(), "little")
                        for t in texts), dtype=np.uint64)


def keys_of(texts: Sequence[str]) -> np.ndarray:
    """The texts' hashes: kept by a mapped sequence (`mapped.MappedTexts.keys`), computed for a list."""
    keys = getattr(texts, "keys", None)
    return keys if isinstance(keys, np.ndarray) else text_hashes(texts)


def dedupe(texts: Sequence[str], labels: Sequence) -> tuple[Sequence[str], list, DedupeReport]:
    """One row per exact text (after strip), in first-occurrence order; majority label wins, ties are dropped.

    Texts that can `take(rows)` (mapped texts) are compared by hash (`dedupe_rows`) and never read."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if hasattr(texts, "take"):
        rows, kept, report = dedupe_rows(keys_of(texts), labels)
        return texts.take(rows), kept, report
    votes: dict[str, Counter] = {}
    kept_form: dict[str, Any] = {}  # key -> the text as kept (a text stripped; a pair, each text stripped)
    for t, y in zip(texts, labels):
        key = text_key(t)
        votes.setdefault(key, Counter())[y] += 1
        kept_form.setdefault(key, tuple(x.strip() for x in t) if isinstance(t, tuple) else key)
    out_t: list[str] = []
    out_y: list = []
    dups = conflicts = conflict_rows = relabelled = 0
    for t, counts in votes.items():  # dicts keep insertion order, so first occurrence order
        n = sum(counts.values())
        ranked = counts.most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            conflicts += 1
            conflict_rows += n
            continue
        out_t.append(kept_form[t])
        out_y.append(ranked[0][0])
        dups += n - 1
        relabelled += len(ranked) > 1
    report = DedupeReport(len(texts), len(out_t), dups, conflicts, conflict_rows, relabelled)
    return out_t, out_y, report


def dedupe_rows(keys: np.ndarray, labels: Sequence) -> tuple[np.ndarray, list, DedupeReport]:
    """`dedupe` over text hashes: (first row of each kept text in first-occurrence order, its majority
    label, report). Same rows and labels as `dedupe` on the texts themselves."""
    n = len(keys)
    codes: dict = {}
    y = np.fromiter((codes.setdefault(v, len(codes)) for v in labels), dtype=np.int64, count=n)
    values = list(codes)
    _, first, group = np.unique(keys, return_index=True, return_inverse=True)  # group: [n] text of each row
    group = group.reshape(-1)
    k = max(len(values), 1)
    pairs, votes = np.unique(group * k + y, return_counts=True)  # one entry per (text, label)
    pg, pl = pairs // k, pairs % k
    top = np.zeros(len(first), dtype=np.int64)
    np.maximum.at(top, pg, votes)
    is_top = votes == top[pg]
    n_top = np.bincount(pg[is_top], minlength=len(first))  # labels sharing the top vote, per text
    winner = np.zeros(len(first), dtype=np.int64)
    winner[pg[is_top]] = pl[is_top]
    size = np.bincount(group, minlength=len(first))
    n_labels = np.bincount(pg, minlength=len(first))
    keep = n_top == 1
    order = np.argsort(first[keep], kind="stable")
    rows = first[keep][order]
    kept = [values[c] for c in winner[keep][order].tolist()]
    report = DedupeReport(n, len(rows), int((size[keep] - 1).sum()), int((~keep).sum()), int(size[~keep].sum()),
                          int((n_labels[keep] > 1).sum()))
    return rows, kept, report


def split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Row counts for train/validation/test: a nonzero fraction gets at least one row."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    _, f_val, f_test = fractions
    n_test = 0 if f_test == 0 else max(1, round(n * f_test))
    n_val = 0 if f_val == 0 else max(1, round(n * f_val))
    return n - n_val - n_test, n_val, n_test


def stratified_split(texts: Sequence[str], labels: Sequence, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                     seed: int = 42, allow_empty_validation: bool = False) -> dict[str, tuple[list[str], list]]:
    """Seeded split into train/validation/test, stratified by label.

    A zero fraction gives an empty split; only validation may be empty, and only with
    `allow_empty_validation`. When some class is too small to stratify, falls back to a
    seeded random split and says why (a warning through `logging`).
    """
    from sklearn.model_selection import train_test_split

    n = len(texts)
    if n != len(labels):
        raise ValueError(f"{n} texts but {len(labels)} labels")
    n_train, n_val, n_test = split_sizes(n, fractions)
    split_desc = "/".join(f"{f:g}" for f in fractions)
    if n_test == 0:
        raise UserError(f"split {split_desc} leaves the test split empty; give it a nonzero fraction")
    if n_train < 1 or fractions[0] == 0:
        raise UserError(f"{n} rows are too few for split {split_desc}: the training split would be empty")
    if n_val == 0 and not allow_empty_validation:
        raise UserError(f"split {split_desc} leaves the validation split empty; give it a nonzero fraction")

    def cut(stratify: bool) -> tuple[list[int], list[int], list[int]]:
        idx = list(range(n))
        rest, test = train_test_split(idx, test_size=n_test, random_state=seed,
                                      stratify=list(labels) if stratify else None)
        val: list[int] = []
        if n_val:
            rest, val = train_test_split(rest, test_size=n_val, random_state=seed,
                                         stratify=[labels[i] for i in rest] if stratify else None)
        return rest, val, test

    try:
        parts = cut(stratify=True)
    except ValueError:
        counts = Counter(labels)
        small, c = min(counts.items(), key=lambda kv: kv[1])
        why = (f"class {clip(repr(small))} has only {c} row(s)" if c < 2
               else f"a split is smaller than the {len(counts)} classes")
        msg = f"stratified split impossible ({why}); using a seeded random split instead"
        logger.warning(msg)
        parts = cut(stratify=False)
    take = getattr(texts, "take", None)  # mapped texts pick rows without reading them
    return {name: (take(ix) if take else [texts[i] for i in ix], [labels[i] for i in ix])
            for name, ix in zip(SPLITS, parts)}
