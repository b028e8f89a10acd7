"""Decoding for token-classification (NER) runs: raw texts in, entities with character offsets out.

The output has the keys of transformers' token-classification pipeline for each of its
`aggregation_strategy` values:

* "first" (what `transferkit predict` uses): each word takes the tag of its first sub-token, the
  one the model was trained on; "average" / "max" pool the word's sub-token probabilities instead
  (mean row, or the sub-token with the most confident row). Consecutive B-X/I-X words then form one
  entity {"entity_group", "score" (mean over its words), "word", "start", "end"};
* "simple": the same grouping over sub-tokens, each with its own tag (a word can split when its
  sub-tokens disagree, as in transformers);
* "none": one {"entity", "score", "index", "word", "start", "end"} per sub-token not tagged O,
  `index` its position in the text's encoding and `word` the sub-token itself.

`word` of an entity is the span of the original text (so casing and spacing survive, where
transformers decodes the sub-tokens: lower-case for an uncased model); `start`/`end` are
character offsets into the text. Long texts are split into the overlapping windows training used.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...core.errors import UserError
from .spans import STRIDE, encode_words, group_entities, require_fast, word_offsets, word_pieces

STRATEGIES = ("none", "simple", "first", "average", "max")


class EntityCodec:
    """Texts to model windows and window probabilities back to entities, for one tagger's tokenizer
    and labels: what the task's `encode_inputs` / `decode` do for every predictor."""

    def __init__(self, tokenizer: Any, label_names: list[str], max_length: int) -> None:
        require_fast(tokenizer)
        self.tokenizer, self.label_names, self.max_length = tokenizer, list(label_names), max_length

    def encode(self, texts: Sequence[str]) -> tuple[list[list[tuple[str, int, int]]], Any]:
        """(words with their character spans, per text; the texts as `EncodedWindows`)."""
        words = [word_offsets(self.tokenizer, t) for t in texts]
        enc = encode_words(self.tokenizer, [[w for w, _, _ in ws] for ws in words], None, self.max_length,
                           STRIDE)
        return words, enc

    def decode(self, texts: Sequence[str], words: list[list[tuple[str, int, int]]], enc: Any, probs: list,
               aggregation_strategy: str = "first") -> list[list[dict[str, Any]]]:
        """Per text, its entities from `probs` (per window: [window length, labels] probabilities)."""
        if aggregation_strategy not in STRATEGIES:
            raise UserError(f"aggregation_strategy {aggregation_strategy!r}: use one of {', '.join(STRATEGIES)}")
        pieces = word_pieces(enc, probs)
        spans = self._piece_spans(words, enc.pieces) if aggregation_strategy in ("none", "simple") else None
        out = []
        for ti, (text, ws, per_word) in enumerate(zip(texts, words, pieces)):
            if aggregation_strategy in ("first", "average", "max"):
                labels, scores = zip(*[_word_label(p, aggregation_strategy) for p in per_word]) if per_word else ((), ())
                out.append(group_entities(text, ws, list(labels), list(scores), self.label_names))
                continue
            flat = [(pos, tid, row, span) for p, sp in zip(per_word, spans[ti]) for (pos, tid, row), span in zip(p, sp)]
            labels = [int(np.argmax(row)) for _, _, row, _ in flat]
            scores = [float(row[k]) for (_, _, row, _), k in zip(flat, labels)]
            if aggregation_strategy == "simple":
                out.append(group_entities(text, [("", s, e) for *_, (s, e) in flat], labels, scores, self.label_names))
            else:
                out.append([{"entity": self.label_names[k], "score": sc, "index": int(pos),
                             "word": self._piece(text, int(tid), s, e), "start": s, "end": e}
                            for (pos, tid, _, (s, e)), k, sc in zip(flat, labels, scores)
                            if self.label_names[k] != "O"])
        return out

    def _piece(self, text: str, token_id: int, start: int, end: int) -> str:
        """The sub-token as the tokenizer spells it; the text it covers when that is the unknown token."""
        if token_id == self.tokenizer.unk_token_id:
            return text[start:end]
        return self.tokenizer.convert_ids_to_tokens(token_id)

    def _piece_spans(self, words: list[list[tuple[str, int, int]]],
                     pieces: list[list[int]]) -> list[list[list[tuple[int, int]]]]:
        """Per text, per word, the character span of each sub-token in the original text."""
        out = []
        for ws, counts in zip(words, pieces):
            enc = self.tokenizer([w for w, _, _ in ws], is_split_into_words=True, add_special_tokens=False,
                                 return_offsets_mapping=True) if ws else None
            per_word: list[list[tuple[int, int]]] = [[] for _ in ws]
            if enc is not None:
                for wid, (s, e) in zip(enc.word_ids(), enc["offset_mapping"]):
                    if wid is not None:
                        per_word[wid].append((ws[wid][1] + s, ws[wid][1] + e))
            for w, (n, (_, s, e)) in enumerate(zip(counts, ws)):
                if len(per_word[w]) != n:  # the word went through the unknown-token fallback
                    per_word[w] = [(s, e)] * n
            out.append(per_word)
        return out




def _word_label(pieces: list[tuple[int, int, Any]], strategy: str) -> tuple[int, float]:
    """(label, score) of a word from its sub-tokens' probability rows."""
    rows = np.stack([row for _, _, row in pieces])  # [pieces, labels]
    if strategy == "average":
        row = rows.mean(axis=0)
    elif strategy == "max":
        row = rows[int(rows.max(axis=1).argmax())]
    else:
        row = rows[0]
    k = int(row.argmax())
    return k, float(row[k])
