"""Words, sub-tokens, windows and entity spans for token classification (NER).

Written here rather than taken from transformers because no single piece there does it end to
end: `DataCollatorForTokenClassification` only pads labels that are already aligned, the
tokenizer's `return_overflowing_tokens` cuts windows at arbitrary sub-tokens and says nothing about
which window a word belongs to, and the token-classification pipeline aggregates sub-tokens it
re-tokenizes itself. Here one scheme holds from training to prediction:

* the FIRST sub-token of each word carries the word's label; the other sub-tokens and the special
  tokens get -100 (ignored by the loss);
* a sentence longer than `max_length` is cut into overlapping windows that start at word
  boundaries where possible; every word is "owned" by exactly one window (the one where it is
  farthest from a cut edge) and is labelled, and later predicted, only there;
* predictions are merged back per word from the owning window, and words become character spans
  of the original text (`word_offsets`) so entities (`group_entities`) quote the text exactly.

Pure functions and small dataclasses; torch is only imported to collate a batch.
"""
from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import UserError

STRIDE = 16  # sub-tokens two neighbouring windows of one sentence share (training and prediction alike)

IGNORE = -100  # label of positions the loss skips (torch's CrossEntropyLoss ignore_index)
_FALLBACK_WORD = re.compile(r"\w+|[^\w\s]")
_NON_SPACE = re.compile(r"\S+")


@dataclass
class EncodedWindows:
    """Sentences of words as model windows, with first-sub-token labels and word ownership.

    `labels` has the shape of `input_ids`, -100 where ignored (everything when no labels were
    given). `sentence[i]` is the sentence of window i. `first_token[i]` lists (position in window
    i, word index in its sentence) for the first sub-token of each word OWNED by window i: every
    word of every sentence appears exactly once over all windows. `n_split` counts sentences that
    needed more than one window. `has_labels` is False when `encode_words` got no labels.
    `start[i]` is what to add to a position of window i to get its position in the sentence's whole
    (unwindowed) encoding, and `pieces[s][w]` how many sub-tokens word w of sentence s has: together
    they place every sub-token, for per-sub-token output and for word scores pooled over sub-tokens.
    """

    input_ids: list[list[int]]
    labels: list[list[int]]
    sentence: list[int]
    first_token: list[list[tuple[int, int]]]
    n_split: int
    has_labels: bool = True
    start: list[int] = field(default_factory=list)
    pieces: list[list[int]] = field(default_factory=list)
    content_end: list[int] = field(default_factory=list)  # per window: first position after its words

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    def n_sentences(self) -> int:
        return max(self.sentence) + 1 if self.sentence else 0

    def collate(self, idx: Sequence[int], pad_id: int) -> dict[str, Any]:
        """Pad the chosen windows: input_ids, attention_mask [, labels padded with -100]."""
        import torch
        rows = [self.input_ids[i] for i in idx]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [batch, width]
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for k, i in enumerate(idx):
            n = len(self.input_ids[i])
            input_ids[k, :n] = torch.tensor(self.input_ids[i], dtype=torch.long)
            mask[k, :n] = 1
            labels[k, :n] = torch.tensor(self.labels[i], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": mask}
        if self.has_labels:
            batch["labels"] = labels
        return batch


def require_fast(tokenizer: Any) -> None:
    """Raise a UserError unless `tokenizer` is a fast (Rust `tokenizers`) tokenizer."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"token classification needs a fast tokenizer (it maps sub-tokens to words with "
                        f"word_ids()), but {type(tokenizer).__name__} is a slow Python tokenizer; "
                        f"choose a model that ships a tokenizer.json")


def plan_windows(word_starts: Sequence[int], n: int, budget: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) ranges over `n` content sub-tokens, each at most `budget` long.

    `word_starts` are the positions where words begin. Windows end before a word where possible
    (a word longer than `budget` is cut into pieces, the first ones filling the window it starts in)
    and the next window starts at the word start whose overlap is closest to `stride` (capped at
    budget // 2, so windows always move on).
    """
    if n <= budget:
        return [(0, n)]
    stride = max(0, min(stride, budget // 2))
    bounds = sorted(set(word_starts) | {0, n})

    def end_of(a: int) -> tuple[int, bool]:
        """(end, whether it cuts a word) of the window starting at `a`."""
        limit = a + budget
        if limit >= n:
            return n, False
        j = bisect_right(bounds, limit) - 1
        last = bounds[j]
        # End before the word that crosses the limit, unless that word is longer than a window and
        # will be cut anyway (then fill this window with its first pieces rather than leave it short).
        if last == limit or (last > a and bounds[j + 1] - last <= budget):
            return last, False
        return limit, True

    windows: list[tuple[int, int]] = []
    a = 0
    while True:
        b, cut = end_of(a)
        windows.append((a, b))
        if b == n:
            return windows
        if cut:  # go on inside the cut word, overlapping by `stride` but not before the word's start
            a = max(a + 1, bounds[bisect_right(bounds, b) - 1], b - stride)
        else:  # the word start in (a, b] whose overlap is closest to `stride`, if its window gets past b
            cands = [s for s in bounds[bisect_right(bounds, a):bisect_right(bounds, b)] if end_of(s)[0] > b]
            a = min(cands, key=lambda s: (abs((b - s) - stride), -(b - s)))


def _owner(s: int, e: int, n: int, windows: Sequence[tuple[int, int]]) -> int:
    """The window holding sub-token `s` where the word [s, e) is farthest from a cut edge."""
    best, best_key = -1, None
    for i, (a, b) in enumerate(windows):
        if not a <= s < b:
            continue
        left = s - a if a > 0 else n  # the sentence's own ends are not cuts
        right = b - min(e, b) if b < n else n
        key = (e <= b, min(left, right))
        if best_key is None or key > best_key:
            best, best_key = i, key
    return best


def _split_specials(word_ids: Sequence[int | None]) -> tuple[int, int]:
    """(number of leading, number of trailing) positions without a word: the special tokens."""
    k = 0
    while k < len(word_ids) and word_ids[k] is None:
        k += 1
    if k == len(word_ids):
        return k, 0
    m = 0
    while word_ids[len(word_ids) - 1 - m] is None:
        m += 1
    return k, m


def encode_words(tokenizer: Any, sentences: list[list[str]], labels: list[list[int]] | None, max_length: int,
                 stride: int = 16, first: int = 0) -> EncodedWindows:
    """Tokenize pre-split words into windows of at most `max_length` tokens (specials included).

    The first sub-token of each word carries its label, all other positions -100. A sentence that
    does not fit is cut into windows overlapping by about `stride` sub-tokens; each word is
    labelled only in the window that owns it (see `EncodedWindows`). A word the tokenizer turns into
    no sub-token at all (e.g. a zero-width space) is encoded as the unknown token, so no word is lost.
    `first` is the number of sentences before these (a chunk of a larger split): errors count from it.
    """
    require_fast(tokenizer)
    if stride < 0:
        raise UserError(f"stride must be >= 0, got {stride}")
    for i, words in enumerate(sentences):
        if isinstance(words, str) or not all(isinstance(w, str) for w in words):
            raise UserError(f"sentence {first + i} must be a list of word strings, got {words!r:.80}")
    if labels is not None:
        if len(labels) != len(sentences):
            raise UserError(f"{len(labels)} label sequences for {len(sentences)} sentences")
        for i, (words, labs) in enumerate(zip(sentences, labels)):
            if len(labs) != len(words):
                raise UserError(f"sentence {first + i} has {len(words)} words but {len(labs)} labels")
    out = EncodedWindows(input_ids=[], labels=[], sentence=[], first_token=[], n_split=0,
                         has_labels=labels is not None)
    if not sentences:
        return out
    sentences = [list(s) for s in sentences]
    enc = tokenizer(sentences, is_split_into_words=True, add_special_tokens=True, truncation=False, verbose=False)
    for si, words in enumerate(sentences):
        ids, wids = list(enc["input_ids"][si]), list(enc.word_ids(si))
        missing = set(range(len(words))) - {w for w in wids if w is not None}
        if missing:
            ids, wids = _encode_with_unk(tokenizer, words, missing, first + si)
        k, m = _split_specials(wids)
        prefix, suffix = ids[:k], ids[len(ids) - m:]
        content, cwids = ids[k:len(ids) - m], wids[k:len(wids) - m]
        budget = max_length - len(prefix) - len(suffix)
        if budget < 1:
            raise UserError(f"max_length {max_length} leaves no room for words next to the tokenizer's "
                            f"{len(prefix) + len(suffix)} special tokens")
        spans: dict[int, list[int]] = {}  # word -> [first sub-token, last sub-token + 1]
        for p, w in enumerate(cwids):
            if w is None:
                continue
            if w in spans:
                spans[w][1] = p + 1
            else:
                spans[w] = [p, p + 1]
        n = len(content)
        windows = plan_windows(sorted(s for s, _ in spans.values()), n, budget, stride)
        out.pieces.append([spans[w][1] - spans[w][0] for w in range(len(words))])
        owned: list[list[int]] = [[] for _ in windows]
        for w in range(len(words)):
            s, e = spans[w]
            owned[_owner(s, e, n, windows)].append(w)
        if len(windows) > 1:
            out.n_split += 1
        for (a, b), words_here in zip(windows, owned):
            row = [IGNORE] * (len(prefix) + (b - a) + len(suffix))
            firsts = []
            for w in sorted(words_here, key=lambda w: spans[w][0]):
                pos = len(prefix) + spans[w][0] - a
                firsts.append((pos, w))
                if labels is not None:
                    row[pos] = int(labels[si][w])
            out.input_ids.append(prefix + content[a:b] + suffix)
            out.labels.append(row)
            out.sentence.append(si)
            out.first_token.append(firsts)
            out.start.append(a)  # window position p is position p + a of the whole encoding
            out.content_end.append(len(prefix) + b - a)
    return out


def _encode_with_unk(tokenizer: Any, words: list[str], missing: set[int], si: int) -> tuple[list[int], list]:
    unk = getattr(tokenizer, "unk_token", None)
    bad = ", ".join(repr(words[w]) for w in sorted(missing))
    if not unk:
        raise UserError(f"sentence {si}: the tokenizer turns the word(s) {bad} into no token and has no "
                        f"unknown token to stand in for them")
    patched = [unk if w in missing else word for w, word in enumerate(words)]
    enc = tokenizer([patched], is_split_into_words=True, add_special_tokens=True, truncation=False, verbose=False)
    ids, wids = list(enc["input_ids"][0]), list(enc.word_ids(0))
    if set(range(len(words))) - {w for w in wids if w is not None}:
        raise UserError(f"sentence {si}: the tokenizer turns the word(s) {bad} into no token")
    return ids, wids


def _as_rows(x: Any) -> Any:
    """A [positions, labels] array from a torch tensor, numpy array or nested list."""
    import numpy as np
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def merge_windows(enc: EncodedWindows, scores: list) -> list[list[tuple[int, float, list[float]]]]:
    """Per sentence, per word: (label index, its probability, the full probability row).

    `scores[i]` holds class probabilities of window i, shape [positions, num_labels] with at least
    `len(enc.input_ids[i])` positions (padded rows are fine). Each word is read at its first
    sub-token in the window that owns it, so every word gets exactly one prediction.
    """
    if len(scores) != len(enc.input_ids):
        raise ValueError(f"{len(scores)} score arrays for {len(enc.input_ids)} windows")
    result: list[list[tuple[int, float, list[float]] | None]] = [[] for _ in range(enc.n_sentences())]
    for i, firsts in enumerate(enc.first_token):
        rows = _as_rows(scores[i])
        if rows.ndim != 2 or rows.shape[0] < len(enc.input_ids[i]):
            raise ValueError(f"window {i} has {len(enc.input_ids[i])} tokens but scores of shape {rows.shape}")
        words = result[enc.sentence[i]]
        for pos, w in firsts:
            if w >= len(words):
                words.extend([None] * (w + 1 - len(words)))
            if words[w] is not None:
                raise ValueError(f"word {w} of sentence {enc.sentence[i]} is owned by two windows")
            row = rows[pos]
            label = int(row.argmax())
            words[w] = (label, float(row[label]), [float(v) for v in row])
    for si, words in enumerate(result):
        if any(p is None for p in words):
            raise ValueError(f"sentence {si} has words owned by no window")
    return result  # type: ignore[return-value]


def word_pieces(enc: EncodedWindows, scores: list) -> list[list[list[tuple[int, int, Any]]]]:
    """Per sentence, per word: (position in the whole encoding, token id, probability row) of each
    of its sub-tokens, read in the window that owns the word (a word longer than a window keeps the
    pieces its owning window holds)."""
    if len(scores) != len(enc.input_ids):
        raise ValueError(f"{len(scores)} score arrays for {len(enc.input_ids)} windows")
    result: list[list[Any]] = [[None] * len(p) for p in enc.pieces]
    for i, firsts in enumerate(enc.first_token):
        rows, si, ids = _as_rows(scores[i]), enc.sentence[i], enc.input_ids[i]
        for pos, w in firsts:
            last = min(pos + enc.pieces[si][w], enc.content_end[i])
            result[si][w] = [(p + enc.start[i], ids[p], rows[p]) for p in range(pos, last)]
    return result


def word_offsets(tokenizer: Any, text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) of each word of raw `text`, with `text[start:end] == word`.

    Words are what the fast tokenizer's own pre-tokenizer makes of the text (for BERT: split on
    whitespace and punctuation, each punctuation mark a word); the tokenizer's normalizer runs first
    when it has one, so e.g. BERT's one-word-per-CJK-character rule holds too, while offsets stay in
    the ORIGINAL text. Spaces that byte-level or metaspace pre-tokenizers keep on a word are trimmed,
    and a piece still holding whitespace is split at it. A pre-tokenizer that splits at whitespace
    alone (sentencepiece's Metaspace: XLM-R, DeBERTa-v3) would make "Paris," one word, where the
    word-split training data (CoNLL) has "Paris" and ","; its pieces are also split into runs of
    punctuation and runs of other characters (punctuation as BERT defines it). Without a pre-tokenizer, words are
    `\\w+|[^\\w\\s]` matches.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    if pre is None:
        return [(m.group(), m.start(), m.end()) for m in _FALLBACK_WORD.finditer(text)]
    pieces = _pre_tokenize(backend, pre, text)
    whitespace_only = len(pre.pre_tokenize_str("a,b")) == 1
    words: list[tuple[str, int, int]] = []
    for s, e in pieces:
        for m in _NON_SPACE.finditer(text, s, e):
            words += (_punctuation_runs(text, m.start(), m.end()) if whitespace_only
                      else [(m.group(), m.start(), m.end())])
    return words


def _is_punctuation(ch: str) -> bool:
    """BERT's punctuation: the ASCII symbols between letters and digits, and Unicode's P* categories."""
    o = ord(ch)
    return 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126 or unicodedata.category(ch)[0] == "P"


def _punctuation_runs(text: str, start: int, end: int) -> list[tuple[str, int, int]]:
    """text[start:end] as (word, start, end) runs of punctuation and of other characters: "Paris," -> Paris, ","."""
    runs: list[tuple[str, int, int]] = []
    a = start
    for i in range(start + 1, end + 1):
        if i == end or _is_punctuation(text[i]) != _is_punctuation(text[i - 1]):
            runs.append((text[a:i], a, i))
            a = i
    return runs


def _pre_tokenize(backend: Any, pre: Any, text: str) -> list[tuple[int, int]]:
    """Character spans of the original text that the (normalizer +) pre-tokenizer makes words of."""
    normalizer = getattr(backend, "normalizer", None)
    if normalizer is not None:
        try:
            from tokenizers import PreTokenizedString
            pts = PreTokenizedString(text)
            pts.normalize(lambda ns: normalizer.normalize(ns))
            pre.pre_tokenize(pts)
            return [tuple(o) for _, o, _ in pts.get_splits(offset_referential="original", offset_type="char")]
        except Exception:  # noqa: BLE001, S110 - an exotic normalizer; pre_tokenize_str needs none
            pass
    return [tuple(o) for _, o in pre.pre_tokenize_str(text)]


def _split_label(name: str) -> tuple[str, str]:
    """('B'|'I'|'O', type) of an IOB2 label; a bare type (IO scheme) continues like I-."""
    if name == "O" or name == "":
        return "O", ""
    if len(name) > 2 and name[:2] in ("B-", "I-"):
        return name[0], name[2:]
    return "I", name


def group_entities(text: str, words: list[tuple[str, int, int]], word_labels: list[int], word_scores: list[float],
                   label_names: list[str]) -> list[dict]:
    """IOB2 word labels as entities, like the pipeline's aggregation_strategy="simple" per word.

    B-X starts an entity; I-X continues the open entity when it has type X, and otherwise (after O,
    or after another type) starts a new one. Words labelled O are dropped. Each entity is
    {"entity_group", "score" (mean of its word scores), "word" (text[start:end], so the original
    casing and spacing are kept), "start", "end"}.
    """
    if not len(words) == len(word_labels) == len(word_scores):
        raise ValueError(f"{len(words)} words, {len(word_labels)} labels and {len(word_scores)} scores")
    entities: list[dict] = []
    open_: dict | None = None
    for (_, s, e), lab, score in zip(words, word_labels, word_scores):
        tag, kind = _split_label(label_names[int(lab)])
        if tag == "O":
            open_ = None
            continue
        if tag == "B" or open_ is None or open_["entity_group"] != kind:
            open_ = {"entity_group": kind, "scores": [], "start": int(s), "end": int(e)}
            entities.append(open_)
        open_["scores"].append(float(score))
        open_["end"] = int(e)
    return [{"entity_group": x["entity_group"], "score": float(sum(x["scores"]) / len(x["scores"])),
             "word": text[x["start"]:x["end"]], "start": x["start"], "end": x["end"]} for x in entities]
