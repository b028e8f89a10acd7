"""Multi-label rows: a text and a set of labels, from any source `data.tables` reads.

A row's labels are a list (JSONL, Parquet, a `datasets` Sequence column) or, in CSV/TSV, one string
separated by `data.label_separator` (default ","; an empty cell is a text with no label). Labels are stripped
strings (integral numbers become their text); a missing cell, a non-text label or an empty name inside a list
is refused naming its row. A row's label is the sorted tuple of its distinct labels.
"""
from __future__ import annotations

import numbers
from collections import Counter
from typing import Any

import numpy as np

from ...config.finetune import DataConfig
from ...core.errors import UserError
from ...data.listing import clip, summarise
from ...data.split import DedupeReport
from ...data.tables import (TEXT_CANDIDATES, ColumnTable, clean_texts, is_missing,
                            open_table, pick_column)
from ..classify.read import LabelledData
from ..classify.splits import TableRule

LABELS_CANDIDATES = ("labels", "label", "tags", "topics", "categories")


def _label_text(v: Any) -> str | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, str):
        return v.strip()
    return None


def clean_label_sets(table: ColumnTable, col: str, where: str, separator: str) -> list[tuple[str, ...]]:
    """Per row the sorted tuple of its distinct labels."""
    out = []
    for i, v in enumerate(table.values(col)):
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if v is None or (not isinstance(v, (list, tuple, str)) and is_missing(v)):
            raise UserError(f"{where}: missing labels at {table.row_name(i)} in column {clip(col)!r}; give an "
                            "empty list (or an empty cell in CSV) for a text with no label")
        parts = v.split(separator) if isinstance(v, str) else v
        if not isinstance(parts, (list, tuple)):
            raise UserError(f"{where}: column {clip(col)!r} holds a {type(v).__name__} at {table.row_name(i)}; a "
                            "row's labels are a list, or a string separated by data.label_separator")
        if isinstance(v, str) and not v.strip():
            parts = []
        names = [_label_text(p) for p in parts]
        if any(n is None or n == "" for n in names):
            bad = next(p for p, n in zip(parts, names) if n is None or n == "")
            raise UserError(f"{where}: label {clip(repr(bad), 30)} at {table.row_name(i)} is not a label name "
                            "(labels are non-empty strings)")
        out.append(tuple(sorted(set(names))))
    return out


def to_label_sets(table: ColumnTable, where: str, text_column: str | None, label_column: str | None,
                  separator: str) -> LabelledData:
    tcol, tnote = pick_column(table, text_column, TEXT_CANDIDATES, "text", where)
    lcol, lnote = pick_column(table, label_column, LABELS_CANDIDATES, "label", where)
    if tcol == lcol:
        raise UserError(f"{where}: text and label columns are both {clip(tcol)!r}")
    return LabelledData(clean_texts(table, tcol, where), clean_label_sets(table, lcol, where, separator), where,
                        [n for n in (tnote, lnote) if n])


def load_label_sets(source: str, text_column: str | None = None, label_column: str | None = None,
                    separator: str = ",", role: str = "data") -> LabelledData:
    table, name = open_table(str(source), role)
    return to_label_sets(table, name, text_column, label_column, separator)


def multi_hot(labels: tuple[str, ...], index: dict[str, int]) -> list[int]:
    row = [0] * len(index)
    for name in labels:
        row[index[name]] = 1
    return row


class LabelSetRule(TableRule):
    """Rows with a set of labels: stratified by each row's rarest label, named by every training label,
    encoded as 0/1 vectors over those names."""

    kind = "multi-label"

    def rows(self, table: ColumnTable, where: str, cfg: DataConfig) -> LabelledData:
        return to_label_sets(table, where, cfg.text_column, cfg.label_column, cfg.label_separator)

    def strata(self, labels: list) -> list | None:
        counts = Counter(name for row in labels for name in row)
        return [min(row, key=lambda n: (counts[n], n)) if row else "" for row in labels]

    def names(self, train: Any, limit: int | None, report: DedupeReport | None) -> list[str]:
        names = sorted({n for row in train.labels for n in row})
        if not names:
            raise UserError(f"training data {train.origin.source} has no labels at all (every row's list is empty)")
        return names

    def encode(self, raw: Any, split: str, index: dict[str, int], mode: str) -> LabelledData:
        for row, labels in enumerate(raw.labels, start=1):
            unknown = [n for n in labels if n not in index]
            if unknown:
                raise UserError(f"label {clip(repr(unknown[0]))} in the {split} split ({raw.origin.source}) does not "
                                f"occur in the training data; training labels ({len(index):,}): "
                                f"{summarise(sorted(index, key=index.get))}")
        return LabelledData(list(raw.texts), [multi_hot(y, index) for y in raw.labels], f"{raw.origin.source} ({split})")

    def counts(self, data: LabelledData, label_names: list[str]) -> dict[str, int]:
        """Per label the rows that have it."""
        totals = np.asarray(data.labels, dtype=np.int64).sum(axis=0) if len(data) else np.zeros(len(label_names))
        return {n: int(c) for n, c in zip(label_names, totals)}
