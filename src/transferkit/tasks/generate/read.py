"""Generation rows: a prompt (one or more chat turns) and the completion the model should write.

Accepted layouts, found by their columns (CSV/TSV/JSONL/Parquet/HF folders/bundled names, as `data.tables`
reads them), in this order:

    messages                  a list of {"role", "content"} turns; the last must be the assistant's (the
                              completion), the ones before it the prompt (system/user/assistant roles)
    prompt + completion       TRL's prompt-completion layout
    instruction (+ input) + output    Alpaca: the prompt is the instruction, then a blank line and the input
    input + output            the prompt is the input

`--text-column P --label-column C` names the prompt and completion columns of any other file. Every prompt and
completion must be a non-empty string; anything else is refused naming its row and column. Repeated prompts
are kept once (the first row's completion) before splitting, so no prompt is both trained on and tested.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...core.errors import UserError
from ...data.listing import clip
from ...data.split import split_sizes
from ...data.tables import ColumnTable, clean_texts, is_missing, open_table, presplit, scalar, split_tables

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
Turn = tuple[str, str]  # (role, content)


@dataclass
class GenRows:
    """Prompts (each a tuple of chat turns) and their completions."""

    prompts: list[tuple[Turn, ...]]
    completions: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def take(self, idx: Any) -> "GenRows":
        return GenRows([self.prompts[i] for i in idx], [self.completions[i] for i in idx], self.source)

    @property
    def texts(self) -> list[str]:
        """Each prompt as one text (the turns' contents joined), for statistics and reports."""
        return [prompt_text(p) for p in self.prompts]


def prompt_text(prompt: tuple[Turn, ...]) -> str:
    """A prompt as a report shows it: a lone user turn as itself, several turns as "role: content" lines."""
    if len(prompt) == 1 and prompt[0][0] == "user":
        return prompt[0][1]
    return "\n".join(f"{role}: {content}" for role, content in prompt)


def _turns(value: Any, where: str) -> tuple[tuple[Turn, ...], str]:
    """A `messages` cell as (prompt turns, completion)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise UserError(f"{where}: messages is not a JSON list of turns") from None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise UserError(f"{where}: messages must be a non-empty list of {{\"role\", \"content\"}} turns")
    turns = []
    for k, t in enumerate(value):
        if not isinstance(t, dict) or not isinstance(t.get("role"), str) or not isinstance(t.get("content"), str):
            raise UserError(f"{where}: messages[{k}] is not a {{\"role\": str, \"content\": str}} turn")
        if t["role"] not in ROLES:
            raise UserError(f"{where}: messages[{k}] has role {clip(t['role'])!r} (roles: {', '.join(ROLES)})")
        if not t["content"].strip():
            raise UserError(f"{where}: messages[{k}] ({t['role']}) is empty")
        turns.append((t["role"], t["content"].strip()))
    if turns[-1][0] != "assistant":
        raise UserError(f"{where}: the last turn of messages is {turns[-1][0]!r}; it must be the assistant's "
                        "reply (the completion the model learns)")
    if not any(r == "user" for r, _ in turns[:-1]):
        raise UserError(f"{where}: messages has no user turn before the assistant's reply")
    return tuple(turns[:-1]), turns[-1][1]


def _strings(table: ColumnTable, col: str, where: str, what: str) -> list[str]:
    try:
        return clean_texts(table, col, where)
    except UserError as e:
        raise UserError(str(e).replace("text(s)", f"{what}(s)").replace("text column", f"{what} column")) from None


def layout(table: ColumnTable, text_column: str | None, label_column: str | None, where: str) -> tuple[str, ...]:
    """The columns a table's rows are read from: ("messages",), (prompt, completion) or (instruction, input,
    output)."""
    cols = set(table.columns)
    if text_column or label_column:
        if not (text_column and label_column):
            raise UserError(f"{where}: name both the prompt column (--text-column) and the completion column "
                            "(--label-column)")
        for c in (text_column, label_column):
            if c not in cols:
                raise UserError(f"{where}: column {clip(c)!r} not found; available columns: "
                                f"{', '.join(table.columns)}")
        return (text_column, label_column)
    if "messages" in cols:
        return ("messages",)
    if {"prompt", "completion"} <= cols:
        return ("prompt", "completion")
    if {"instruction", "output"} <= cols:
        return ("instruction", "input" if "input" in cols else "", "output")
    if {"input", "output"} <= cols:
        return ("input", "output")
    missing = ("completion" if "prompt" in cols else "output" if cols & {"instruction", "input"} else None)
    hint = f" (found no {missing} column)" if missing else ""
    raise UserError(f"{where}: no generation columns{hint}: give messages, prompt+completion, "
                    f"instruction(+input)+output or input+output (columns: {', '.join(table.columns)}); or name them "
                    "with --text-column PROMPT --label-column COMPLETION")


def to_rows(table: ColumnTable, where: str, text_column: str | None = None,
            label_column: str | None = None) -> GenRows:
    cols = layout(table, text_column, label_column, where)
    if cols == ("messages",):
        parsed = [_turns(scalar(v), f"{where}: {table.row_name(i)}") if not is_missing(scalar(v)) else None
                  for i, v in enumerate(table.values("messages"))]
        if None in parsed:
            raise UserError(f"{where}: messages missing at {table.row_name(parsed.index(None))}")
        return GenRows([p for p, _ in parsed], [c for _, c in parsed], where)
    if len(cols) == 3:  # instruction (+ input) + output
        instr = _strings(table, cols[0], where, "instruction")
        extra = ([scalar(v) for v in table.values(cols[1])] if cols[1] else [None] * len(instr))
        prompts = [i if is_missing(x) or not str(x).strip() else f"{i}\n\n{str(x).strip()}"
                   for i, x in zip(instr, extra)]
        completions = _strings(table, cols[2], where, "completion")
    else:
        prompts = _strings(table, cols[0], where, "prompt")
        completions = _strings(table, cols[1], where, "completion")
    return GenRows([(("user", p),) for p in prompts], completions, where)


def load_rows(source: str, text_column: str | None = None, label_column: str | None = None,
              role: str = "data") -> GenRows:
    table, name = open_table(str(source), role)
    return to_rows(table, name, text_column, label_column)


def dedupe(rows: GenRows) -> tuple[GenRows, int]:
    """Each prompt once (its first row), in file order; and how many rows were dropped."""
    seen: set = set()
    keep = []
    for i, p in enumerate(rows.prompts):
        key = tuple((r, " ".join(c.split())) for r, c in p)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return rows.take(keep), len(rows) - len(keep)


@dataclass
class GenSplits:
    train: GenRows
    validation: GenRows
    test: GenRows
    label_names: list[str]
    summary: dict[str, Any]


def prepare_splits(cfg: Any, seed: int) -> GenSplits:
    """The train/validation/test rows of `cfg` (a DataConfig): one source split by prompt (seeded, after
    dropping repeated prompts), a DatasetDict folder's own splits, or three files."""
    summary: dict[str, Any] = {}
    if cfg.train:
        if not (cfg.validation and cfg.test):
            raise UserError("data.train needs data.validation and data.test too (or give one file as data.data)")
        parts = {name: load_rows(getattr(cfg, name), cfg.text_column, cfg.label_column, role=name)
                 for name in ("train", "validation", "test")}
        source = cfg.train
    else:
        source = cfg.data or "bbc-headlines"
        if presplit(source):
            tables = split_tables(source)
            parts = {}
            for name, keys in (("train", ("train",)), ("validation", ("validation", "valid", "dev")),
                               ("test", ("test",))):
                key = next((k for k in keys if k in tables), None)
                if key is None:
                    raise UserError(f"{source}: no {name} split (splits: {', '.join(tables)})")
                parts[name] = to_rows(*tables[key], cfg.text_column, cfg.label_column)
        else:
            rows = load_rows(source, cfg.text_column, cfg.label_column)
            if cfg.dedupe:
                rows, dropped = dedupe(rows)
                summary["repeated_prompts_dropped"] = dropped
                if dropped:
                    logger.info(f"{source}: {dropped:,} row(s) repeat an earlier prompt and were dropped")
            n_train, n_val, n_test = split_sizes(len(rows), cfg.split)
            if n_train < 1 or n_test < 1:
                raise UserError(f"{source}: {len(rows)} rows are too few for split {cfg.split}")
            order = np.random.default_rng(seed).permutation(len(rows))
            parts = {"train": rows.take(order[:n_train]), "validation": rows.take(order[n_train:n_train + n_val]),
                     "test": rows.take(order[n_train + n_val:])}
    if cfg.limit:
        parts["train"] = parts["train"].take(range(min(cfg.limit, len(parts["train"]))))
    for name, part in parts.items():
        if not len(part) and name != "validation":
            raise UserError(f"{source}: the {name} split is empty")
    summary.update({"source": str(source), **{name: len(p) for name, p in parts.items()}})
    logger.info(f"generation data: {len(parts['train']):,} train / {len(parts['validation']):,} validation / "
                f"{len(parts['test']):,} test prompt-completion pairs from {source}")
    return GenSplits(parts["train"], parts["validation"], parts["test"], ["completion"], summary)
