"""Sentence-classification rows: a text and a label per row, read from any source `data.tables` reads
(`load_table`, every split of a saved `DatasetDict`: `load_hf_splits`) into `LabelledData`.

Labels are kept as found (str or int): integral numbers and numeric strings become ints, so a CSV's
"1" and a Parquet 1 are the same label; a missing or list-valued label is refused naming its row.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import UserError
from ...data.listing import clip
from ...data.tables import (TEXT_CANDIDATES, ColumnTable, clean_texts, is_missing, open_table, pick_column,
                            scalar, split_tables)

LABEL_CANDIDATES = ("label", "labels", "sentiment", "class", "target", "category")


@dataclass
class LabelledData:
    """Texts with their labels (str or int, as found in the source), in source order."""

    texts: list[str]
    labels: list
    source: str
    notes: list[str] = field(default_factory=list)  # e.g. which of several candidate columns was used
    label_columns: list[str] = field(default_factory=list)  # where labels are columns (regression targets)

    def __len__(self) -> int:
        return len(self.texts)


def load_table(source: str, text_column: str | None = None, label_column: str | None = None,
               role: str = "data") -> LabelledData:
    """Load `source` (bundled dataset name or path) as texts and labels; `role` names it in errors."""
    table, name = open_table(str(source), role)
    return to_labelled(table, name, text_column, label_column)


def load_hf_splits(path: str | Path, text_column: str | None = None,
                   label_column: str | None = None) -> dict[str, LabelledData]:
    """Every split of a saved `DatasetDict` folder (or a bundled dataset that comes split), by split name."""
    return {split: to_labelled(table, where, text_column, label_column)
            for split, (table, where) in split_tables(path).items()}


def to_labelled(table: ColumnTable, where: str, text_column: str | None,
                 label_column: str | None) -> LabelledData:
    tcol, tnote = pick_column(table, text_column, TEXT_CANDIDATES, "text", where)
    lcol, lnote = pick_column(table, label_column, LABEL_CANDIDATES, "label", where)
    if tcol == lcol:
        raise UserError(f"{where}: text and label columns are both {clip(tcol)!r}")
    texts = clean_texts(table, tcol, where)
    labels = clean_labels(table, lcol, where)
    return LabelledData(texts, labels, where, [n for n in (tnote, lnote) if n])


def clean_labels(table: ColumnTable, col: str, where: str, normalise: bool = True) -> list:
    """Stripped labels of `col`, refusing missing and list-valued ones; `normalise` turns integral
    numbers and numeric strings into ints (a streaming reader decides that once, over every value)."""
    names = (table.class_names or {}).get(col)
    out: list = []
    bad: list[int] = []
    for i, v in enumerate(table.values(col)):
        v = scalar(v)
        if names is not None and isinstance(v, int):
            # A ClassLabel id outside its names (datasets uses -1 for "no label") is missing.
            v = names[v] if 0 <= v < len(names) else None
        if isinstance(v, str):
            v = v.strip()
        if is_missing(v) or v == "":
            bad.append(i)
            out.append(None)
            continue
        if isinstance(v, (list, dict, tuple)):
            raise UserError(f"{where}: label column {clip(col)!r} holds a {type(v).__name__} at "
                            f"{table.row_name(i)}; only one label per row is supported")
        if isinstance(v, bool):
            v = str(v).lower()
        out.append(v)
    if bad:
        raise UserError(f"{where}: {len(bad):,} missing label(s) in column {clip(col)!r} "
                        f"(first at {table.row_name(bad[0])}); remove or label those rows")
    return normalise_labels(out) if normalise else out


def normalise_labels(labels: list) -> list:
    """Integral numbers (float or numeric strings) become ints; anything else stays as found."""
    if all(isinstance(v, numbers.Real) for v in labels):
        if all(float(v).is_integer() for v in labels):
            return [int(v) for v in labels]
        return labels
    if all(isinstance(v, str) for v in labels):
        # CSV/TSV cells are read as strings; numeric label columns come back as ints.
        try:
            nums = [float(v) for v in labels]
        except ValueError:
            return labels
        if all(math.isfinite(x) and x.is_integer() for x in nums):
            return [int(x) for x in nums]
        return labels
    return [str(v) for v in labels]  # mixed types: compare by their text form
