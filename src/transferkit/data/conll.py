"""CoNLL files: one token per line with its tag in the last column, blank lines between sentences,
`-DOCSTART-` lines skipped and a `token ... tag` header line allowed. `conll_sentences` reads lines, so the
in-memory reader and the streamed one (NER's mapped cache) share it."""
from __future__ import annotations

import re
from typing import Iterable, Iterator

from ..core.errors import UserError
from .listing import clip

DOCSTART = "-DOCSTART-"
_COLUMNS = re.compile(r"[ \t]+")  # CoNLL columns; other Unicode spaces may sit inside a token
_HEADER_TOKEN = ("token", "tokens", "word", "words")
_HEADER_TAG = ("tag", "tags", "label", "labels", "ner", "ner_tag", "ner_tags")


def conll_sentences(lines: Iterable[str], source: str, notes: list[str]) -> Iterator[tuple[list[str], list[str], int]]:
    """(tokens, raw tags, line of the first token) of each sentence of CoNLL `lines`, in order; a
    header line read as such is noted in `notes`. Used whole (in memory) and streamed (`mapped_tagged`)."""
    cur_tokens: list[str] = []
    cur_tags: list[str] = []
    start = 0
    seen_content = False
    for n, line in enumerate(lines, 1):
        stripped = line.strip(" \t\r\n")
        if not stripped:
            if cur_tokens:
                yield cur_tokens, cur_tags, start
                cur_tokens, cur_tags = [], []
            continue
        cols = _COLUMNS.split(stripped)
        if cols[0] == DOCSTART:
            if cur_tokens:
                yield cur_tokens, cur_tags, start
                cur_tokens, cur_tags = [], []
            continue
        first = not seen_content
        seen_content = True
        if first and len(cols) > 1 and cols[0].lower() in _HEADER_TOKEN and cols[-1].lower() in _HEADER_TAG:
            notes.append(f"{source}: line {n} read as a header ({clip(stripped)!r}), not as a token")
            continue
        if len(cols) == 1:
            raise UserError(f"{source}: line {n} has one column ({clip(repr(cols[0]))}); expected a token and "
                            "its tag separated by whitespace (the tag in the last column), or a blank line between "
                            "sentences")
        if not cur_tokens:
            start = n
        cur_tokens.append(cols[0])
        cur_tags.append(cols[-1])
    if cur_tokens:
        yield cur_tokens, cur_tags, start
