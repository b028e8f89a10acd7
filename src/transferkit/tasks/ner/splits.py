"""Tagged (NER) data as train/validation/test splits with integer tag ids.

`prepare_tagged_splits` mirrors `prepare.prepare_splits`: one file split by sentence
(seeded shuffle, not stratified) or explicit train/test(/validation) files, dedupe, limit,
then integer tag ids over `label_names` ("O", then B-T, I-T for each entity type). The files
are read by `tagged_read`.
"""
from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...config.finetune import DataConfig
from ...core.errors import UserError
from ...data.listing import clip, summarise
from ...data.split import SPLITS, split_sizes
from ..classify.splits import _hf_explicit_splits, _same_file
from .mapped import load_mapped_tagged, wants_mapped_tagged
from .read import TaggedSplit, TaggedTable, load_tagged, load_tagged_splits

logger = logging.getLogger(__name__)

MIN_SENTENCES = 2  # per split: one sentence cannot be both trained on and checked against
VALIDATION_CARVE = (0.9, 0.0, 0.1)  # without a validation file, 10% of training becomes validation


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


# --- splits --------------------------------------------------------------------------

def prepare_tagged_splits(cfg: DataConfig, seed: int, label_names: list[str] | None = None) -> TaggedSplits:
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
            train = _load(cfg, cfg.train, cols, "train")
            test = _load(cfg, cfg.test, cols, "test")
            val = _load(cfg, cfg.validation, cols, "validation") if cfg.validation is not None else None
            mode = "files"
        _log_notes([train, val, test])
        for name, table in (("train", train), ("validation", val), ("test", test)):
            if table is not None and len(table) < MIN_SENTENCES:
                raise UserError(f"{name} data {table.source} has {len(table):,} sentence(s); "
                                f"need at least {MIN_SENTENCES}")
        if val is None:
            if cfg.dedupe:
                train, report = dedupe_sentences(train)
            parts = _shuffle_split(train, VALIDATION_CARVE, seed, report, carve=True)
            train, val = parts["train"], parts["test"]
            logger.info(f"validation: no validation data given; using 10% of {train.source} ({len(val):,} sentences)")
        raws = {"train": train, "validation": val, "test": test}
    else:
        if cfg.validation is not None or cfg.test is not None:
            raise UserError("data.validation and data.test need data.train as well "
                            "(or leave them unset and split data.data)")
        if cfg.data is None:
            raise UserError("no data given: set data.data (a tagged file or saved dataset folder) or data.train")
        mode = "split"
        whole = _load(cfg, cfg.data, cols, "data")
        _log_notes([whole])
        if cfg.dedupe:
            whole, report = dedupe_sentences(whole)
        raws = _shuffle_split(whole, cfg.split, seed, report)

    before_limit = len(raws["train"])
    if cfg.limit is not None and cfg.limit < before_limit:
        raws["train"] = raws["train"].take(range(cfg.limit))
        if cfg.limit < MIN_SENTENCES:
            raise UserError(f"data.limit={cfg.limit} leaves {cfg.limit} training sentence(s); "
                            f"need at least {MIN_SENTENCES}")
    limited = cfg.limit if cfg.limit is not None and cfg.limit < before_limit else None

    entity_types = _entity_types(raws["train"], limited, report)
    label_names_out = ["O"] + [f"{p}-{t}" for t in entity_types for p in ("B", "I")]
    index = {name: i for i, name in enumerate(label_names_out)}
    whole_counts = whole.entity_counts() if whole is not None else None
    encoded = {name: _encode(raws[name], name, index, raws["train"].source, whole_counts, limited)
               for name in SPLITS}
    summary = _summary(cfg, seed, mode, raws, label_names_out, entity_types, report, before_limit, limited)
    _log_summary(summary)
    return TaggedSplits(label_names_out, entity_types, encoded["train"], encoded["validation"], encoded["test"],
                        summary)


def _load(cfg: DataConfig, source: str, cols: tuple, role: str) -> Any:
    """One tagged source, in memory or (data.storage) through the memory-mapped cache."""
    if wants_mapped_tagged(cfg.storage, source):
        found = load_mapped_tagged(source, *cols)
        if found is not None:
            logger.info(f"storage: {source} is read from a memory-mapped cache ({len(found):,} sentences; "
                        f"data.storage={cfg.storage})")
            return found
        if cfg.storage == "mapped":
            logger.info(f"storage: {source} is one JSON array, which is read in memory (JSON lines stream)")
    return load_tagged(source, *cols, role=role)


def dedupe_sentences(table: Any) -> tuple[Any, dict]:
    """One sentence per exact token sequence, the first occurrence (and its tags) kept; sentences
    are compared by hash (`TaggedTable.keys`), so a mapped table is never read here."""
    keys, tag_keys = table.keys(), table.tag_keys()
    _, first, group = np.unique(keys, return_index=True, return_inverse=True)  # group: [n] sentence of each row
    group = group.reshape(-1)
    keep = np.sort(first)
    repeat = np.ones(len(keys), dtype=bool)
    repeat[first] = False
    conflicting = int((tag_keys[repeat] != tag_keys[first[group[repeat]]]).sum())
    report = {"sentences_in": len(table), "sentences_out": len(keep),
              "repeats_removed": len(table) - len(keep), "repeats_with_other_tags": conflicting}
    return table.take(keep), report


def _dedupe_text(report: dict) -> str:
    s = (f"{report['sentences_in']:,} sentences -> {report['sentences_out']:,}: "
         f"{report['repeats_removed']:,} repeated token sequences removed (the first kept)")
    if report["repeats_with_other_tags"]:
        s += f"; {report['repeats_with_other_tags']:,} of them had other tags than the kept one"
    return s


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
        out[name] = table.take(order[start:start + sizes[name]])
        start += sizes[name]
    return out


def _entity_types(train: TaggedTable, limit: int | None, report: dict | None) -> list[str]:
    types = sorted(train.entity_counts())
    if not types:
        after = f" after data.limit={limit}" if limit is not None else ""
        raise UserError(f"training data {train.source} has no entities{after} (every tag is O); "
                        "a tagger needs at least one B-X tag to learn from")
    return types


def _encode(table: Any, split: str, index: dict[str, int], train_source: str,
            whole_counts: Counter | None, limit: int | None) -> Any:
    unknown = table.first_unknown(index)
    if unknown is not None:
        where, tag, unseen = unknown
        kind = tag[2:]
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
    return table.encode(index, f"{table.source} ({split})")


def _log_notes(tables: list[TaggedTable | None]) -> None:
    seen: set[str] = set()
    for table in tables:
        for note in (table.notes if table is not None else []):
            if note not in seen:
                seen.add(note)
                logger.info(f"note: {note}")


def _summary(cfg: DataConfig, seed: int, mode: str, raws: dict[str, TaggedTable], label_names: list[str],
             entity_types: list[str], report: dict | None, before_limit: int, limit: int | None) -> dict:
    train_keys = raws["train"].keys()
    counts = {s: raws[s].entity_counts() for s in SPLITS}
    return {
        "mode": mode,
        "sources": {s: raws[s].source for s in SPLITS},
        "seed": seed,
        "split": list(cfg.split) if mode == "split" else None,
        "sizes": {s: len(raws[s]) for s in SPLITS},
        "tokens": {s: raws[s].token_count() for s in SPLITS},
        "entities": {s: {k: counts[s].get(k, 0) for k in entity_types} for s in SPLITS},
        "label_names": list(label_names),
        "entity_types": list(entity_types),
        "dedupe": report,
        "limit": limit,
        "train_sentences_before_limit": before_limit,
        # Sentences also in training score memory, not generalisation.
        "overlap_with_train": {s: int(np.isin(raws[s].keys(), train_keys).sum()) for s in ("validation", "test")},
        "identical_to_train": [s for s in ("validation", "test") if mode == "files" and getattr(cfg, s) is not None
                               and _same_file(cfg.train, getattr(cfg, s))],
    }


def _log_summary(summary: dict) -> None:
    src = summary["sources"]
    logger.info(f"data: {src['train']}" if summary["mode"] == "split" else
                "data: " + ", ".join(f"{s} {src[s]}" for s in SPLITS))
    if summary["dedupe"] is not None:
        logger.info(f"dedupe: {_dedupe_text(summary['dedupe'])}")
    sizes, tokens = summary["sizes"], summary["tokens"]
    how = (f"seed {summary['seed']}, fractions {'/'.join(f'{f:g}' for f in summary['split'])}"
           if summary["split"] else summary["mode"])
    logger.info(f"split: train {sizes['train']:,} | validation {sizes['validation']:,} | test {sizes['test']:,} "
                f"sentences ({how})")
    logger.info(f"tokens: train {tokens['train']:,} | validation {tokens['validation']:,} | test {tokens['test']:,}")
    if summary["limit"] is not None:
        logger.info(f"limit: using the first {summary['limit']:,} of {summary['train_sentences_before_limit']:,} "
                    "training sentences")
    types = summary["entity_types"]
    width = max(len("entity"), *(len(t) for t in types))
    counts = summary["entities"]
    cols = [max(len(s), *(len(f"{counts[s].get(t, 0):,}") for t in types)) for s in SPLITS]
    logger.info("  " + "entity".ljust(width) + "".join(f"  {s:>{w}}" for s, w in zip(SPLITS, cols)))
    for t in types:
        logger.info("  " + t.ljust(width) + "".join(f"  {counts[s].get(t, 0):>{w},}" for s, w in zip(SPLITS, cols)))
    memory = "scores on them measure memory, not generalisation"
    for s, k in summary["overlap_with_train"].items():
        if s in summary["identical_to_train"]:
            logger.warning(f"warning: the {s} file {src[s]} is identical to the training file {src['train']}; {memory}")
        elif k:
            logger.warning(f"warning: {k:,} of {sizes[s]:,} {s} sentences also occur in the training data; {memory}")
