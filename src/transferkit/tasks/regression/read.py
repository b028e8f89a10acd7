"""Regression rows: a text and one or more numeric target columns, from any source `data.tables` reads.

Targets are named (`--label-column score`, or `a,b` for several) or found as one of `TARGET_CANDIDATES`.
Every value must be a finite number (an int, a float, or a string that reads as one); anything else is
refused naming its row and column. A row's label is the tuple of its targets.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ...config.finetune import DataConfig
from ...core.errors import UserError
from ...data.listing import clip
from ...data.split import DedupeReport, text_key
from ...data.tables import (TEXT_CANDIDATES, ColumnTable, clean_texts, is_missing,
                            open_table, pick_column, scalar)
from ..classify.read import LabelledData
from ..classify.splits import TableRule

TARGET_CANDIDATES = ("score", "label", "target", "value", "rating", "y")
STRATA = 10  # the split is stratified by the first target's quantile bin, at most this many


def target_columns(table: ColumnTable, wanted: str | None, where: str) -> list[str]:
    """The target columns: `wanted` ("a" or "a,b"), or the first of TARGET_CANDIDATES the table has."""
    if wanted is None:
        col, _ = pick_column(table, None, TARGET_CANDIDATES, "label", where)
        return [col]
    names = [w.strip() for w in str(wanted).split(",")]
    if not all(names):
        raise UserError(f"{where}: --label-column {clip(str(wanted))!r} has an empty name")
    cols = [pick_column(table, n, (), "label", where)[0] for n in names]
    if len(set(cols)) != len(cols):
        raise UserError(f"{where}: a target column is named twice in {clip(str(wanted))!r}")
    return cols


def clean_targets(table: ColumnTable, col: str, where: str) -> list[float]:
    """The column as finite floats; a missing, non-numeric or non-finite value names its row."""
    out = []
    for i, v in enumerate(table.values(col)):
        v = scalar(v)
        x = None
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and not is_missing(v):
            x = float(v)
        elif isinstance(v, str):
            try:
                x = float(v.strip())
            except ValueError:
                x = None
        if x is None or not math.isfinite(x):
            what = "missing" if is_missing(v) or v == "" else f"not a finite number ({clip(repr(v), 30)})"
            raise UserError(f"{where}: target column {clip(col)!r} at {table.row_name(i)} is {what}; "
                            "regression targets must be finite numbers")
        out.append(x)
    return out


def to_targets(table: ColumnTable, where: str, text_column: str | None, label_column: str | None) -> LabelledData:
    tcol, tnote = pick_column(table, text_column, TEXT_CANDIDATES, "text", where)
    cols = target_columns(table, label_column, where)
    if tcol in cols:
        raise UserError(f"{where}: the text column {clip(tcol)!r} is also a target")
    texts = clean_texts(table, tcol, where)
    columns = [clean_targets(table, c, where) for c in cols]
    return LabelledData(texts, list(zip(*columns)), where, [tnote] if tnote else [], label_columns=cols)


def load_targets(source: str, text_column: str | None = None, label_column: str | None = None,
                 role: str = "data") -> LabelledData:
    table, name = open_table(str(source), role)
    return to_targets(table, name, text_column, label_column)


class TargetRule(TableRule):
    """Rows with numbers for labels: read as floats, stratified by the first target's quantile bin, named by
    their columns, kept as they are (no label ids)."""

    kind = "regression"

    def rows(self, table: ColumnTable, where: str, cfg: DataConfig) -> LabelledData:
        return to_targets(table, where, cfg.text_column, cfg.label_column)

    def dedupe(self, texts: Any, labels: list) -> tuple[Any, list, DedupeReport]:
        """One row per text (after strip), in first-occurrence order, with the mean of its rows' targets (a
        number has no majority); `relabelled` counts the texts whose rows disagreed."""
        rows: dict[str, list] = {}
        for t, y in zip(texts, labels):
            rows.setdefault(text_key(t), []).append(y)
        out_t = list(rows)
        out_y = [tuple(float(v) for v in np.mean(np.asarray(rows[k], dtype=np.float64), axis=0)) for k in out_t]
        averaged = sum(len(set(rows[k])) > 1 for k in out_t)
        return out_t, out_y, DedupeReport(len(texts), len(out_t), len(texts) - len(out_t), 0, 0, averaged)

    def strata(self, labels: list) -> list | None:
        first = np.array([y[0] for y in labels], dtype=np.float64)
        bins = max(1, min(STRATA, len(first) // 20))
        edges = np.unique(np.quantile(first, np.linspace(0, 1, bins + 1)[1:-1])) if bins > 1 else []
        return np.digitize(first, edges).tolist()

    def names(self, train: object, limit: int | None, report: DedupeReport | None) -> list[str]:
        return list(train.origin.label_columns)

    def encode(self, raw: object, split: str, index: dict[str, int], mode: str) -> LabelledData:
        names = list(index)
        if raw.origin.label_columns != names:
            raise UserError(f"{raw.origin.source}: its targets are {', '.join(raw.origin.label_columns)}, the training "
                            f"data's {', '.join(names)}; every split needs the same target columns")
        texts = list(raw.texts)
        return LabelledData(texts, [tuple(y) for y in raw.labels], f"{raw.origin.source} ({split})",
                            label_columns=names)

    def counts(self, data: LabelledData, label_names: list[str]) -> dict[str, float]:
        """Per target its mean in the split (the summary's table)."""
        if not len(data):
            return {n: 0.0 for n in label_names}
        means = np.asarray(data.labels, dtype=np.float64).mean(axis=0)
        return {n: round(float(m), 3) for n, m in zip(label_names, means)}
