"""Sentence-pair classification: classify's head, loss, metrics and decoding over the model's pair input.

A pair is encoded as the tokenizer encodes `text, text_pair` (`[CLS] A [SEP] B [SEP]` for BERT, `<s> A </s></s>
B </s>` for RoBERTa), cut `longest_first` (the longer text loses tokens first) to the run's max_length. Where
the encoder has token types (BERT's two segments) the model gives the second text type 1 itself
(`pair_sep_id` in its config; see `modeling.classifier`), so every path that feeds it token ids alone (the
predictor, the mixed-batch server, ONNX graphs) reads the pair as the tokenizer would have given it.

An input is a pair: (a, b), [a, b] or {"text": a, "text_pair": b} (transformers' pipeline form). On the
command line, `predict RUN A1 B1 A2 B2` reads the texts two at a time; an `--input` file has two text columns.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
from torch import nn

from ...core.errors import UserError
from ...data.batches import TokenData
from ...data.listing import clip
from ...data.tables import clean_texts, open_table, presplit, split_tables
from ...data.tokens import length_stats, token_ids
from ...modeling.resolve import load_tokenizer, set_head
from ..classify.read import LabelledData
from ..classify.splits import prepare_splits
from ..classify.task import SequenceClassification
from ..rows import EncodedInputs
from .read import PairRule, load_pairs, pair_columns, to_pairs

logger = logging.getLogger(__name__)


def pair_ids(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int | None) -> list[np.ndarray]:
    """Token ids per pair as the model reads it (special tokens added), cut `longest_first` to `max_length`
    (None: not cut)."""
    cut = {"truncation": "longest_first", "max_length": max_length} if max_length else {"truncation": False}
    ids = token_ids(tokenizer, [a for a, _ in pairs], [b for _, b in pairs], **cut)
    return [np.asarray(row, dtype=np.int32) for row in ids]


def as_pair(item: Any, position: int) -> tuple[str, str]:
    """One input as (text, text_pair); anything else is a UserError naming its position (1-based)."""
    if isinstance(item, dict) and set(item) == {"text", "text_pair"}:
        pair = (item["text"], item["text_pair"])
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        pair = (item[0], item[1])
    else:
        raise UserError(f"input {position} is not a pair: give [text, text_pair] or "
                        f"{{\"text\": ..., \"text_pair\": ...}}, got {clip(repr(item), 60)}")
    for side, text in zip(("text", "text_pair"), pair):
        if not isinstance(text, str):
            raise UserError(f"input {position}: its {side} is not a string: {clip(repr(text), 40)}")
        if not text.strip():
            raise UserError(f"input {position}: its {side} is empty")
    return pair


class PairClassification(SequenceClassification):
    name = "pair"
    pipeline_names = ("text-classification",)
    runs_csv_columns = ("label", "confidence", "probs", "text_pair")
    augment_formats = ()
    serving_task = "classify"  # served by classify's routes, with pair inputs
    sample_columns = ("text,text_pair", "label")

    def prepare(self, data_cfg: Any, seed: int) -> Any:
        return prepare_splits(data_cfg, seed, PairRule())

    def augment(self, splits: Any, steps: list, seed: int, spec: str) -> Any:
        raise UserError("augment: the text steps rewrite one text; pair data takes mixup alone")

    def token_lengths(self, tokenizer: Any, split: Any) -> Any:
        pairs = list(split.texts)
        for side, k in (("first", 0), ("second", 1)):
            ids = tokenizer([p[k] for p in pairs], add_special_tokens=False, verbose=False)["input_ids"]
            s = length_stats(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)))
            logger.info(f"tokens per {side} text (train): mean {s['mean']}, p95 {s['p95']}, max {s['max']}")
        return np.fromiter((len(x) for x in pair_ids(tokenizer, pairs, None)), dtype=np.int64, count=len(pairs))

    def build_model(self, resolved: Any, label_names: list[str], pooling: str, dropout: float, head_hidden: int,
                    pool_layers: int, random_init: bool = False) -> nn.Module:
        model = super().build_model(resolved, label_names, pooling, dropout, head_hidden, pool_layers, random_init)
        if "pair_sep_id" not in self.head:
            tokenizer = load_tokenizer(resolved.path)
            types = int(getattr(model.encoder.config, "type_vocab_size", 0) or 0)
            if types >= 2 and "token_type_ids" in tokenizer.model_input_names and tokenizer.sep_token_id is not None:
                self.head["pair_sep_id"] = int(tokenizer.sep_token_id)
                set_head(model.config, self.head)
        return model

    def encode(self, tokenizer: Any, split: Any, max_length: int) -> Any:
        return TokenData(pair_ids(tokenizer, list(split.texts), max_length), list(split.labels))

    def encode_inputs(self, tokenizer: Any, inputs: list[Any], max_length: int) -> EncodedInputs:
        pairs = [as_pair(p, i + 1) for i, p in enumerate(inputs)]
        return EncodedInputs(pair_ids(tokenizer, pairs, max_length), list(range(len(pairs))), len(pairs))

    def display_text(self, item: Any) -> str:
        return f"{item[0]}  ||  {item[1]}"

    # ---- inputs: pairs ---------------------------------------------------------------------------
    def is_single(self, inputs: Any) -> bool:
        if isinstance(inputs, (dict, str)):  # a lone string is one input (refused: not a pair), not characters
            return True
        return isinstance(inputs, (tuple, list)) and len(inputs) == 2 and all(isinstance(x, str) for x in inputs)

    def check_inputs(self, inputs: Sequence[Any]) -> list[Any]:
        return [as_pair(p, i + 1) for i, p in enumerate(inputs)]

    def cli_inputs(self, texts: Sequence[Any]) -> list[Any]:
        """Pairs as given ((a, b), [a, b] or {"text", "text_pair"}), or plain texts taken two at a time."""
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            return self.check_inputs(texts)
        if len(texts) % 2:
            raise UserError(f"a pair run reads its texts two at a time (A1 B1 A2 B2 ...); got {len(texts)} texts")
        return self.check_inputs(list(zip(texts[0::2], texts[1::2])))

    def read_inputs(self, path: str, text_column: str | None) -> list[Any]:
        table, name = open_table(str(path), "input")
        first, second = pair_columns(table, text_column, name)
        return list(zip(clean_texts(table, first, name), clean_texts(table, second, name)))

    def input_fields(self, item: Any) -> dict[str, Any]:
        return {"text": item[0], "text_pair": item[1]}

    def input_problem(self, value: Any, max_chars: int) -> tuple[int, str] | None:
        try:
            a, b = as_pair(value, 1)
        except UserError as e:
            return 422, str(e).split(": ", 1)[-1]
        if len(a) + len(b) > max_chars:
            return 413, f"{len(a) + len(b):,} characters, more than {max_chars:,}"
        return None

    def token_counts(self, tokenizer: Any, inputs: list[Any]) -> list[int]:
        return [len(ids) for ids in pair_ids(tokenizer, [as_pair(p, i + 1) for i, p in enumerate(inputs)], None)]

    def read_labelled(self, source: str, text_column: str | None, label_column: str | None) -> LabelledData:
        """A labelled file's pairs; a bundled dataset that comes split (wiki-nsp) gives its test split."""
        if presplit(source):
            table, where = split_tables(source)["test"]
            return to_pairs(table, where, text_column, label_column)
        return load_pairs(source, text_column, label_column)

    # ---- prediction files --------------------------------------------------------------------------
    def csv_header(self, label_names: Sequence[str]) -> list[str]:
        return ["text_pair", *super().csv_header(label_names)]

    def csv_cells(self, row: dict[str, Any], label_names: Sequence[str]) -> list[str]:
        return [row["text_pair"], *super().csv_cells(row, label_names)]

    def runs_csv_cells(self, row: dict[str, Any]) -> dict[str, str]:
        return {**super().runs_csv_cells(row), "text_pair": row["text_pair"]}

    def pipeline_single(self, result: Any, options: dict[str, Any]) -> Any:
        """transformers gives one pair (a dict) its result itself, not in a list."""
        return result

    def add_routes(self, app: Any, answer: Any) -> None:
        """None of its own: classify's routes answer pair runs too (`serving_task`)."""

    # ---- model cards: a pair goes to the pipeline as a dict, to the tokenizer as two lists ------------------
    card_input = '{"text": "The cat sat on the mat.", "text_pair": "It was very comfortable."}'
    card_onnx_texts = '["The cat sat on the mat."], ["It was very comfortable."]'

    def card_summary(self, label_names: Sequence[str]) -> str:
        return (f"classifies a pair of texts into one of {len(label_names)} labels "
                f"({', '.join(map(str, label_names))})")
