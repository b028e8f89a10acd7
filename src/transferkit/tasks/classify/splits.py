"""Turn a `DataConfig` into train/validation/test splits with integer label ids.

`data.data` and the explicit files (`data.train`/`data.validation`/`data.test`) exclude each
other: giving both is refused rather than silently using one. Three ways in:
  1. `data.train` + `data.test` (+ optional `data.validation`): explicit files, used as
     given. Without a validation file, 10% of the training file is carved off (stratified,
     seeded; the training file is deduplicated first when `data.dedupe` is on, so the
     carved rows cannot also sit in training).
  2. `data.data` is a saved `DatasetDict` folder with `train` and `test` splits: its splits
     are used as explicit splits, the same way.
  3. Otherwise `data.data` (a file, a folder, or a bundled dataset name) is read, deduplicated
     when `data.dedupe` is on, and split by `data.split` with a seeded stratified split.
`data.limit` then keeps the first N rows of the training split. The training split of
2. and 3. is already in seeded random order, so this is a random subsample there; for an
explicit training file it is the first N rows in file order.

What a row's label is (one class, two texts' class, target numbers, a set of labels) is a `LabelRule`:
how a source is read, what the split is stratified on, the label names and how a label is encoded. The
default is sentence classification's; the other tasks with a head over the pooled text pass their own.

Logged: which column was used where several candidates matched, and a warning when
validation or test texts also occur in training (or a file is identical to the training
file), since scores on those texts measure memory, not generalisation.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...config.finetune import DataConfig
from ...core.errors import UserError
from ...data.fingerprint import file_sha256
from ...data.listing import clip, summarise
from ...data.mapped import wants_mapped
from ...data.split import SPLITS, DedupeReport, dedupe, keys_of, split_sizes, stratified_split, text_key
from ...data.tables import hf_split_names, open_table, presplit, split_tables
from .mapped import load_mapped
from .read import LabelledData, load_hf_splits, load_table

logger = logging.getLogger(__name__)


@dataclass
class Splits:
    """The three splits (labels are ids into `label_names`) plus a summary for logs and reports."""

    train: LabelledData
    validation: LabelledData
    test: LabelledData
    label_names: list[str]
    summary: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def __getitem__(self, name: str) -> LabelledData:
        if name not in SPLITS:
            raise KeyError(name)
        return getattr(self, name)


@dataclass
class _Raw:
    """A split before label ids: its rows plus the loaded table they came from (for row numbers)."""

    texts: list[str]
    labels: list
    origin: LabelledData


class LabelRule:
    """Sentence classification's rows: a text and one label each, stratified by label, named by the sorted
    training labels, encoded as label ids (an unknown one is refused naming its row)."""

    def load(self, cfg: DataConfig, source: str, role: str) -> LabelledData:
        """One source as rows, in memory or (data.storage) through the memory-mapped cache."""
        return _load(cfg, source, role)

    def load_hf(self, cfg: DataConfig) -> dict[str, LabelledData]:
        """Every split of the saved DatasetDict `cfg.data`."""
        return load_hf_splits(cfg.data, cfg.text_column, cfg.label_column)

    def dedupe(self, texts: Any, labels: list) -> tuple[Any, list, DedupeReport]:
        """One row per text: the majority label wins, ties are dropped (`data.split.dedupe`)."""
        return dedupe(texts, labels)

    def strata(self, labels: list) -> list | None:
        """What the split is stratified on, one key per row (None: the labels themselves)."""
        return None

    def names(self, train: "_Raw", limit: int | None, report: DedupeReport | None) -> list[str]:
        return _label_names(train, limit, report)

    def encode(self, raw: "_Raw", split: str, index: dict[str, int], mode: str) -> LabelledData:
        return _encode(raw, split, index, mode)

    def counts(self, data: LabelledData, label_names: list[str]) -> dict[str, Any]:
        """Per label name, what the summary's table shows for a split (rows with that label)."""
        return {label_names[i]: c for i, c in sorted(Counter(data.labels).items())}


class TableRule(LabelRule):
    """A rule whose rows are read from a whole table in memory (pairs, targets, label sets): the task says how a
    table becomes rows (`rows`); a file, a bundled name and every split of a DatasetDict go through it alike."""

    kind = "these"  # names the data in the refusal of data.storage=mapped (that cache streams one text and label)

    def rows(self, table: Any, where: str, cfg: DataConfig) -> LabelledData:
        raise NotImplementedError

    def load(self, cfg: DataConfig, source: str, role: str) -> LabelledData:
        if cfg.storage == "mapped":
            raise UserError(f"data.storage=mapped streams one text and one label per row; {self.kind} data is read "
                            "in memory (data.storage=auto or memory)")
        table, where = open_table(str(source), role)
        return self.rows(table, where, cfg)

    def load_hf(self, cfg: DataConfig) -> dict[str, LabelledData]:
        return {split: self.rows(table, where, cfg) for split, (table, where) in split_tables(cfg.data).items()}


def _stratified(texts: Any, labels: list, fractions: Any, seed: int, allow_empty_validation: bool,
                rule: LabelRule) -> dict[str, tuple[Any, list]]:
    """`stratified_split`, on the rule's strata where it has its own."""
    strata = rule.strata(labels)
    if strata is None:
        return stratified_split(texts, labels, fractions, seed, allow_empty_validation=allow_empty_validation)
    parts = stratified_split(list(range(len(labels))), strata, fractions, seed,
                             allow_empty_validation=allow_empty_validation)
    return {s: ([texts[i] for i in ix], [labels[i] for i in ix]) for s, (ix, _) in parts.items()}


def prepare_splits(cfg: DataConfig, seed: int, rule: LabelRule | None = None) -> Splits:
    """Load, deduplicate, split and encode the data described by `cfg` (see the module doc)."""
    rule = rule or LabelRule()
    explicit = [k for k in ("train", "validation", "test") if getattr(cfg, k) is not None]
    if cfg.data is not None and explicit:
        raise UserError(f"give either data.data or data.train/validation/test; not both "
                        f"(data.data={clip(cfg.data, 60)}, data.{explicit[0]}={clip(getattr(cfg, explicit[0]), 60)})")
    report: DedupeReport | None = None
    hf_splits = _hf_explicit_splits(cfg)
    if cfg.train is not None or hf_splits is not None:
        mode = "files"
        if hf_splits is not None:
            loaded = rule.load_hf(cfg)
            train_ld, test_ld, val_ld = loaded["train"], loaded["test"], loaded.get("validation")
            mode = "dataset splits"
        else:
            if cfg.test is None:
                raise UserError("data.train is set but data.test is not; give a test file as well")
            train_ld = rule.load(cfg, cfg.train, "train")
            test_ld = rule.load(cfg, cfg.test, "test")
            val_ld = rule.load(cfg, cfg.validation, "validation") if cfg.validation is not None else None
        _log_notes([train_ld, val_ld, test_ld])
        train = _Raw(train_ld.texts, train_ld.labels, train_ld)
        test = _Raw(test_ld.texts, test_ld.labels, test_ld)
        if val_ld is not None:
            val = _Raw(val_ld.texts, val_ld.labels, val_ld)
        else:
            texts, labels = train.texts, train.labels
            if cfg.dedupe:
                texts, labels, report = rule.dedupe(texts, labels)
            _check_enough_rows(len(texts), (0.9, 0.0, 0.1), train_ld.source, report)
            parts = _stratified(texts, labels, (0.9, 0.0, 0.1), seed, True, rule)
            train = _Raw(*parts["train"], train_ld)
            val = _Raw(*parts["test"], train_ld)
            logger.info(f"validation: no validation data given; using 10% of {train_ld.source} "
                        f"({len(val.texts):,} rows)")
    else:
        if cfg.validation is not None or cfg.test is not None:
            raise UserError("data.validation and data.test need data.train as well "
                            "(or leave them unset and split data.data)")
        if cfg.data is None:
            raise UserError("no data given: set data.data (a file or dataset name) or data.train")
        mode = "split"
        whole = rule.load(cfg, cfg.data, "data")
        _log_notes([whole])
        texts, labels = whole.texts, whole.labels
        if cfg.dedupe:
            texts, labels, report = rule.dedupe(texts, labels)
        _check_enough_rows(len(texts), cfg.split, whole.source, report)
        parts = _stratified(texts, labels, cfg.split, seed, cfg.split[1] == 0, rule)
        train, val, test = (_Raw(*parts[s], whole) for s in SPLITS)

    rows_before_limit = len(train.texts)
    if cfg.limit is not None and cfg.limit < rows_before_limit:
        train = _Raw(train.texts[:cfg.limit], train.labels[:cfg.limit], train.origin)

    label_names = rule.names(train, cfg.limit if len(train.texts) < rows_before_limit else None, report)
    index = {name: i for i, name in enumerate(label_names)}
    raws = {"train": train, "validation": val, "test": test}
    encoded = {name: rule.encode(raw, name, index, mode) for name, raw in raws.items()}

    summary = _summary(cfg, seed, mode, raws, encoded, label_names, report, rows_before_limit, rule)
    _log_summary(summary)
    return Splits(encoded["train"], encoded["validation"], encoded["test"], label_names, summary)


def _load(cfg: DataConfig, source: str, role: str) -> LabelledData:
    """One source, in memory or (data.storage) through the memory-mapped cache."""
    if wants_mapped(cfg.storage, source):
        found = load_mapped(source, cfg.text_column, cfg.label_column)
        if found is not None:
            logger.info(f"storage: {source} is read from a memory-mapped cache ({len(found):,} rows; "
                        f"data.storage={cfg.storage})")
            return found
        if cfg.storage == "mapped":
            logger.info(f"storage: {source} is one JSON array, which is read in memory (JSON lines stream)")
    return load_table(source, cfg.text_column, cfg.label_column, role=role)


def _hf_explicit_splits(cfg: DataConfig) -> list[str] | None:
    """Split names when `data.data` is a saved DatasetDict with train and test splits."""
    if cfg.train is None and presplit(cfg.data):
        return list(SPLITS)
    if cfg.train is not None or cfg.data is None or not Path(cfg.data).expanduser().is_dir():
        return None
    names = hf_split_names(Path(cfg.data).expanduser())
    return names if names and "train" in names and "test" in names else None


def _log_notes(loaded: list[LabelledData | None]) -> None:
    """Log each loaded table's notes (e.g. which of several candidate columns was used) once."""
    seen: set[str] = set()
    for ld in loaded:
        for note in (ld.notes if ld is not None else []):
            if note not in seen:
                seen.add(note)
                logger.info(f"note: {note}")


def _dedupe_removed(report: DedupeReport | None) -> str:
    """'dedupe removed N of M rows: ...', or '' when dedupe was off or removed nothing."""
    if report is None or report.rows_out == report.rows_in:
        return ""
    return (f"dedupe removed {report.rows_in - report.rows_out:,} of {report.rows_in:,} rows: "
            f"{report.duplicates_removed:,} repeats, {report.conflict_rows_removed:,} rows of texts with tied labels")


def _check_enough_rows(n: int, fractions, source: str, report: DedupeReport | None) -> None:
    """Refuse, naming the file and what dedupe removed, when `n` rows leave the training split empty."""
    n_train, _, _ = split_sizes(n, fractions)
    if n_train >= 1 or fractions[0] == 0:
        return  # enough rows (a zero training fraction is stratified_split's error to report)
    desc = "/".join(f"{f:g}" for f in fractions)
    removed = _dedupe_removed(report)
    if removed:
        raise UserError(f"{source}: {n:,} row(s) left after dedupe are too few for split {desc} ({removed}); "
                        "data.dedupe=false keeps repeats")
    raise UserError(f"{source}: {n:,} row(s) are too few for split {desc}: the training split would be empty")


def _same_file(a: str, b: str) -> bool:
    """True when two paths are the same file or files with the same bytes."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if not (pa.is_file() and pb.is_file()):
        return False
    if pa.resolve() == pb.resolve():
        return True
    return pa.stat().st_size == pb.stat().st_size and file_sha256(pa) == file_sha256(pb)


def _label_names(train: _Raw, limit: int | None, report: DedupeReport | None = None) -> list[str]:
    """Sorted training labels as strings; all-int labels sort numerically."""
    uniq = set(train.labels)
    if len(uniq) < 2:
        only = next(iter(uniq)) if uniq else None
        after = f" after data.limit={limit}" if limit is not None else ""
        removed = _dedupe_removed(report)
        why = f" ({removed}; data.dedupe=false keeps repeats)" if removed else ""
        raise UserError(f"training data {train.origin.source} has a single class {clip(repr(str(only)))}{after}; "
                        f"need at least 2{why}")
    if all(isinstance(v, int) for v in uniq):
        return [str(v) for v in sorted(uniq)]
    return sorted(str(v) for v in uniq)


def _encode(raw: _Raw, split: str, index: dict[str, int], mode: str) -> LabelledData:
    ids = []
    for text, label in zip(raw.texts, raw.labels):
        key = str(label)
        if key not in index:
            row = _row_of(raw.origin, text)
            where = f"{raw.origin.source} row {row}" if row else raw.origin.source
            hint = "" if mode != "split" else f" ({Counter(raw.origin.labels)[label]} row(s) in all)"
            unknown = {str(y) for y in raw.labels} - set(index)
            more = f"; nor do {len(unknown) - 1:,} other {split} labels" if len(unknown) > 1 else ""
            raise UserError(f"label {clip(repr(key))} in the {split} split ({where}) does not occur in the training "
                            f"data{hint}{more}; training labels ({len(index):,}): "
                            f"{summarise(sorted(index, key=index.get))}")
        ids.append(index[key])
    texts = list(raw.texts) if isinstance(raw.texts, list) else raw.texts  # mapped texts stay in their file
    return LabelledData(texts, ids, f"{raw.origin.source} ({split})")


def _row_of(data: LabelledData, text: str) -> int | None:
    """1-based row of `text` in the loaded table (only needed for error messages)."""
    key = text_key(text)
    for i, t in enumerate(data.texts):
        if text_key(t) == key:
            return i + 1
    return None


def _summary(cfg: DataConfig, seed: int, mode: str, raws: dict[str, _Raw], encoded: dict[str, LabelledData],
             label_names: list[str], report: DedupeReport | None, rows_before_limit: int, rule: LabelRule) -> dict:
    train_keys = keys_of(raws["train"].texts)  # texts compared by hash: a mapped split is never read here
    keys = {s: keys_of(raws[s].texts) for s in ("validation", "test")}
    overlap = {s: np.isin(keys[s], train_keys) for s in keys}
    return {
        "mode": mode,
        "sources": {s: raws[s].origin.source for s in SPLITS},
        "seed": seed,
        "split": list(cfg.split) if mode == "split" else None,
        "sizes": {s: len(encoded[s]) for s in SPLITS},
        "labels": {s: rule.counts(encoded[s], label_names) for s in SPLITS},
        "label_names": list(label_names),
        "dedupe": report.as_dict() if report is not None else None,
        "limit": cfg.limit if cfg.limit is not None and cfg.limit < rows_before_limit else None,
        "train_rows_before_limit": rows_before_limit,
        # Repeated texts across splits inflate scores; dedupe before splitting prevents it.
        "overlap_with_train": {s: len(np.unique(keys[s][overlap[s]])) for s in keys},
        "overlap_rows_with_train": {s: int(overlap[s].sum()) for s in ("validation", "test")},
        # Explicit validation/test files with the training file's bytes (or the same path).
        "identical_to_train": [s for s in ("validation", "test") if mode == "files" and getattr(cfg, s) is not None
                               and _same_file(cfg.train, getattr(cfg, s))],
    }


def _log_summary(summary: dict) -> None:
    src = summary["sources"]
    if summary["mode"] == "split":
        logger.info(f"data: {src['train']}")
    else:
        logger.info("data: " + ", ".join(f"{s} {src[s]}" for s in SPLITS))
    if summary["dedupe"] is not None:
        logger.info(f"dedupe: {DedupeReport(**summary['dedupe'])}")
    sizes = summary["sizes"]
    how = f"seed {summary['seed']}, fractions {'/'.join(f'{f:g}' for f in summary['split'])}" if summary["split"] else summary["mode"]
    logger.info(f"split: train {sizes['train']:,} | validation {sizes['validation']:,} | test {sizes['test']:,} "
                f"({how})")
    if summary["limit"] is not None:
        logger.info(f"limit: using the first {summary['limit']:,} of {summary['train_rows_before_limit']:,} "
                    "training rows")
    names = summary["label_names"]
    width = max(len("label"), *(len(n) for n in names))
    cols = [max(len(s), len(f"{sizes[s]:,}")) for s in SPLITS]
    logger.info("  " + "label".ljust(width) + "".join(f"  {s:>{w}}" for s, w in zip(SPLITS, cols)))
    for n in names:
        counts = [summary["labels"][s].get(n, 0) for s in SPLITS]
        logger.info("  " + n.ljust(width) + "".join(f"  {c:>{w},}" for c, w in zip(counts, cols)))
    memory = "scores on them measure memory, not generalisation"
    for s, k in summary["overlap_rows_with_train"].items():
        n = sizes[s]
        if s in summary["identical_to_train"]:
            logger.warning(f"warning: the {s} file {src[s]} is identical to the training file {src['train']} "
                           f"({k:,} of {n:,} {s} texts occur in the training data); {memory}")
        elif k and src[s] == src["train"]:
            logger.warning(f"warning: {k:,} of {n:,} {s} texts also occur in the training split "
                           f"(repeated texts in {src[s]}; data.dedupe=true removes repeats before splitting); {memory}")
        elif k:
            logger.warning(f"warning: {k:,} of {n:,} {s} texts also occur in the training data "
                           f"({src[s]} vs {src['train']}); {memory}")
