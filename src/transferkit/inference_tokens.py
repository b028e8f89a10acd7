"""Prediction for token-classification (NER) runs: raw texts in, entities with character offsets out.

The output matches transformers' token-classification pipeline with `aggregation_strategy="simple"`
(`entity_group`, `score`, `word`, `start`, `end`), computed at word level: each word takes the tag
of its first sub-token, consecutive B-X/I-X words form one entity, `score` is their mean
probability and `word` is the span of the original text, so casing and spacing survive.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch
from torch import nn

from .inference import LoadedModel


class EntityPredictor(LoadedModel):
    """A trained token classifier ready to tag texts: `.predict(texts)` -> per text, its entities."""

    def __init__(self, model: nn.Module, tokenizer: Any, label_names: list[str], max_length: int = 256,
                 batch_size: int = 64, device: str | torch.device | None = None) -> None:
        from .tasks.token_spans import require_fast
        require_fast(tokenizer)
        super().__init__(model, tokenizer, label_names, max_length, batch_size, device)

    def predict(self, texts: Sequence[str] | str) -> Any:
        """Per text: {"entities": [{"entity_group", "score", "word", "start", "end"}, ...]}."""
        from .inference import _check_texts
        from .tasks.token_classification import TokenClassification, window_probs
        from .tasks.token_spans import encode_words, group_entities, merge_windows, word_offsets
        single = isinstance(texts, str)
        texts = _check_texts([texts] if single else texts)
        t0 = time.perf_counter()
        words = [word_offsets(self.tokenizer, t) for t in texts]
        enc = encode_words(self.tokenizer, [[w for w, _, _ in ws] for ws in words], None, self.max_length,
                           TokenClassification.stride)
        probs = window_probs(self.model, enc, self.batch_size, self.pad_id, self.device)
        merged = merge_windows(enc, probs)  # per text, per word: (tag, probability, row)
        out = []
        for text, ws, tags in zip(texts, words, merged):
            ents = group_entities(text, ws, [t[0] for t in tags], [float(t[1]) for t in tags], self.label_names)
            out.append({"entities": ents})
        self.last_throughput = len(texts) / max(time.perf_counter() - t0, 1e-9)
        return out[0] if single else out
