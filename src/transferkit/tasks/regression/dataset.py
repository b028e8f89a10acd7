"""`movie-scores`, the bundled regression dataset: the movie review sentences with their mean human
sentiment score (-4 .. +4, Hutto & Gilbert 2014), from the same file of the vaderSentiment sdist that
`movie-sentences` labels by sign; here every sentence keeps its score, the 37 neutral ones included."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...data.bundled import VADER_SOURCE, read_movie_snippets, register_fetched


def parse_movie_scores(raw: bytes) -> Any:
    """`id<TAB>mean score<TAB>sentence` lines as a (text, score) table."""
    import pandas as pd
    texts, scores = [], []
    for lineno, line in enumerate(raw.decode("utf-8").split("\n"), 1):  # \n only: see parse_movie_sentences
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"line {lineno} has {len(parts)} tab-separated fields, expected 3")
        texts.append(parts[2].strip())
        scores.append(float(parts[1]))
    return pd.DataFrame({"text": pd.Series(texts, dtype=object), "score": scores})


def _extract(archive: Path) -> Any:
    return parse_movie_scores(read_movie_snippets(archive))


register_fetched("movie-scores", "movie review sentences with their mean human sentiment score, -4 to +4 "
                 "(Hutto & Gilbert 2014 ground truth)", "vaderSentiment", "3.3.2", VADER_SOURCE, ("score",), 10605,
                 _extract, no_binary=True, columns=("text", "score"), task="regression")
