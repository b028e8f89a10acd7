"""Sentence-pair rows: two text columns and a label, from any source `data.tables` reads.

The two columns are named (`--text-column A,B`) or found as one of the usual pairs below; a file with the
first column of a pair but not its second is refused naming the missing one. Each row's texts are a tuple
(first, second), so classify's splitting, deduplication and overlap checks treat a pair as one key.
"""
from __future__ import annotations


from ...config.finetune import DataConfig
from ...core.errors import UserError
from ...data.listing import clip, summarise
from ...data.tables import ColumnTable, clean_texts, open_table, pick_column
from ..classify.read import LABEL_CANDIDATES, LabelledData, clean_labels
from ..classify.splits import TableRule

# (first, second) column names, in the order they are looked for
PAIR_COLUMNS = (("text", "text_pair"), ("sentence1", "sentence2"), ("premise", "hypothesis"),
                ("question", "answer"), ("question1", "question2"), ("sentence_a", "sentence_b"))


def pair_columns(table: ColumnTable, wanted: str | None, where: str) -> tuple[str, str]:
    """The two text columns: `wanted` as "A,B", or the first of `PAIR_COLUMNS` the table has."""
    if wanted is not None:
        parts = [p.strip() for p in str(wanted).split(",")]
        if len(parts) != 2 or not all(parts):
            raise UserError(f"{where}: a pair task reads two text columns; give them as --text-column A,B "
                            f"(data.text_column), got {clip(str(wanted))!r}")
        first, _ = pick_column(table, parts[0], (), "text", where)
        second, _ = pick_column(table, parts[1], (), "text", where)
        if first == second:
            raise UserError(f"{where}: both texts of a pair are column {clip(first)!r}; name two columns")
        return first, second
    lower = {c.strip().lower(): c for c in table.columns}
    for first, second in PAIR_COLUMNS:
        if first in lower and second in lower:
            return lower[first], lower[second]
    for first, second in PAIR_COLUMNS:
        if first in lower or second in lower:
            have, lack = (first, second) if first in lower else (second, first)
            raise UserError(f"{where}: found the text column {have!r} but not its pair {lack!r}; available columns: "
                            f"{summarise(table.columns)}; name both with --text-column A,B")
    looked = ", ".join(f"{a}/{b}" for a, b in PAIR_COLUMNS)
    raise UserError(f"{where}: no pair of text columns found (looked for {looked}); available columns: "
                    f"{summarise(table.columns)}; name them with --text-column A,B")


def to_pairs(table: ColumnTable, where: str, text_column: str | None, label_column: str | None) -> LabelledData:
    first, second = pair_columns(table, text_column, where)
    lcol, note = pick_column(table, label_column, LABEL_CANDIDATES, "label", where)
    if lcol in (first, second):
        raise UserError(f"{where}: the label column {clip(lcol)!r} is also one of the pair's texts")
    pairs = list(zip(clean_texts(table, first, where), clean_texts(table, second, where)))
    return LabelledData(pairs, clean_labels(table, lcol, where), where, [note] if note else [])


def load_pairs(source: str, text_column: str | None = None, label_column: str | None = None,
               role: str = "data") -> LabelledData:
    """`source` (a bundled dataset name or a path) as (first, second) texts with labels."""
    table, name = open_table(str(source), role)
    return to_pairs(table, name, text_column, label_column)


class PairRule(TableRule):
    """classify's rule over pairs: two text columns and a label, held in memory."""

    kind = "pair"

    def rows(self, table: ColumnTable, where: str, cfg: DataConfig) -> LabelledData:
        return to_pairs(table, where, cfg.text_column, cfg.label_column)
