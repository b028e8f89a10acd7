"""EDA (Wei & Zou, 2019): synonym replacement, random insertion, random swap and random deletion.

Each augmented copy of an example applies one operation (the operations given a rate take turns,
as in the paper, so `copies=4` with two operations makes two copies of each). For a sentence of n
words an operation at rate r touches max(1, round(r * n)) words; deletion drops each word with
probability r and never empties a sentence. Stopwords are never replaced and never the source of an
inserted synonym. Every copy is seeded by (seed, example, copy), so an example's copies do not
depend on the rest of the data.

Tagged sentences (NER) keep their tags aligned: only words tagged O are replaced, swapped or
deleted, an inserted word is tagged O and never lands inside an entity (before an I- tag), and a
multiword synonym becomes several O words. Entity words are never touched.

Written here rather than taken from nlpaug or TextAttack: nlpaug's last release is from 2022 and
TextAttack brings TensorFlow; the four operations are a few lines each.
"""
from __future__ import annotations

import random
from typing import Sequence

from .spec import EDA_OPERATIONS
from .synonyms import SynonymSource

# Function words EDA leaves alone (a short list of English closed-class words).
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves s t don isn wasn aren weren doesn didn
""".split())

_PUNCT = "\"'`.,;:!?()[]{}<>«»“”‘’-–—…*/\\"


def _core(word: str) -> tuple[str, str, str]:
    """(leading punctuation, the word, trailing punctuation)."""
    start, end = 0, len(word)
    while start < end and word[start] in _PUNCT:
        start += 1
    while end > start and word[end - 1] in _PUNCT:
        end -= 1
    return word[:start], word[start:end], word[end:]


def _match_case(synonym: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return synonym.upper()
    return synonym[:1].upper() + synonym[1:] if like[:1].isupper() else synonym


class EDA:
    """The four operations over words, with optional IOB2 tags kept aligned."""

    def __init__(self, rates: dict[str, float], synonyms: SynonymSource | None) -> None:
        self.rates = {op: float(rates.get(op, 0.0)) for op in EDA_OPERATIONS}
        self.operations = [op for op in EDA_OPERATIONS if self.rates[op] > 0]
        if not self.operations:
            raise ValueError("EDA needs a rate > 0 for at least one operation")
        self.synonyms = synonyms
        if synonyms is None and ({"synonym", "insert"} & set(self.operations)):
            raise ValueError("synonym replacement and insertion need a synonym source")

    # ---- one copy ---------------------------------------------------------------------------------
    def copy(self, words: Sequence[str], tags: Sequence[str] | None, seed: str,
             operation: str) -> tuple[list[str], list[str] | None]:
        """One augmented copy of `words` (and `tags`) made by `operation`, seeded by `seed`."""
        rng = random.Random(seed)
        w = list(words)
        t = list(tags) if tags is not None else None
        n = max(1, round(self.rates[operation] * len(w)))
        if operation == "synonym":
            return self._replace(w, t, n, rng)
        if operation == "insert":
            return self._insert(w, t, n, rng)
        if operation == "swap":
            return self._swap(w, t, n, rng)
        return self._delete(w, t, self.rates["delete"], rng)

    def copies(self, words: Sequence[str], tags: Sequence[str] | None, seed: int, example: int,
               copies: int) -> list[tuple[list[str], list[str] | None]]:
        """`copies` augmented versions of one example; the operations take turns (offset per example)."""
        out = []
        for c in range(copies):
            op = self.operations[(example + c) % len(self.operations)]
            out.append(self.copy(words, tags, f"{seed}-{example}-{c}", op))
        return out

    # ---- the operations ---------------------------------------------------------------------------
    @staticmethod
    def _free(t: list[str] | None, i: int) -> bool:
        """Word i may change: any word of an untagged text, only O words of a tagged sentence."""
        return t is None or t[i] == "O"

    def _candidates(self, w: list[str], t: list[str] | None) -> list[int]:
        out = []
        for i, word in enumerate(w):
            core = _core(word)[1]
            if self._free(t, i) and core.isalpha() and core.lower() not in STOPWORDS:
                out.append(i)
        return out

    def _replace(self, w: list[str], t: list[str] | None, n: int, rng: random.Random) -> tuple[list[str], list[str] | None]:
        candidates = self._candidates(w, t)
        rng.shuffle(candidates)
        chosen: dict[int, list[str]] = {}
        for i in candidates:
            pre, core, post = _core(w[i])
            options = self.synonyms.synonyms(core.lower())
            if options:
                parts = _match_case(rng.choice(options), core).split()
                parts[0] = pre + parts[0]
                parts[-1] = parts[-1] + post  # the same word when the synonym is one word
                chosen[i] = parts
            if len(chosen) >= n:
                break
        new_w: list[str] = []
        new_t: list[str] | None = [] if t is not None else None
        for i, word in enumerate(w):
            parts = chosen.get(i, [word])
            if t is not None and i not in chosen:
                new_t.append(t[i])
            elif t is not None:
                new_t.extend(["O"] * len(parts))  # only O words are replaced
            if t is None and i in chosen:
                parts = [" ".join(parts)]  # one text word, spaces inside
            new_w.extend(parts)
        return new_w, new_t

    def _insert(self, w: list[str], t: list[str] | None, n: int, rng: random.Random) -> tuple[list[str], list[str] | None]:
        candidates = self._candidates(w, t)
        for _ in range(n):
            words = []
            for _attempt in range(10):  # a word with synonyms, as EDA tries a few before giving up
                if not candidates:
                    break
                options = self.synonyms.synonyms(_core(w[rng.choice(candidates)])[1].lower())
                if options:
                    words = rng.choice(options).split()
                    break
            if not words:
                break
            # positions 0..len: never directly before an I- tag (that would split an entity)
            spots = [p for p in range(len(w) + 1) if t is None or p == len(w) or not t[p].startswith("I-")]
            p = rng.choice(spots)
            if t is None:
                w[p:p] = [" ".join(words)]
            else:
                w[p:p] = words
                t[p:p] = ["O"] * len(words)
            candidates = [i + (len(words) if t is not None else 1) if i >= p else i for i in candidates]
        return w, t

    def _swap(self, w: list[str], t: list[str] | None, n: int, rng: random.Random) -> tuple[list[str], list[str] | None]:
        free = [i for i in range(len(w)) if self._free(t, i)]
        if len(free) < 2:
            return w, t
        for _ in range(n):
            i, j = rng.sample(free, 2)
            w[i], w[j] = w[j], w[i]  # both O when tagged: tags stay as they are
        return w, t

    def _delete(self, w: list[str], t: list[str] | None, rate: float, rng: random.Random) -> tuple[list[str], list[str] | None]:
        keep = [not (self._free(t, i) and rng.random() < rate) for i in range(len(w))]
        if not any(keep):
            keep[rng.randrange(len(w))] = True
        new_w = [x for x, k in zip(w, keep) if k]
        new_t = [x for x, k in zip(t, keep) if k] if t is not None else None
        return new_w, new_t
