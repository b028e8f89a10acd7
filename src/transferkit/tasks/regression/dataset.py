"""`movie-scores`, the bundled regression dataset: the movie review sentences with their mean human
sentiment score (-4 .. +4, Hutto & Gilbert 2014), from the same file of the vaderSentiment sdist that
`movie-sentences` labels by sign; here every sentence keeps its score, the 37 neutral ones included."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...data.bundled import VADER_SOURCE, movie_snippets, read_movie_snippets, register_fetched


def parse_movie_scores(raw: bytes) -> Any:
    """The ground-truth file as a (text, score) table, every sentence kept."""
    import pandas as pd
    rows = movie_snippets(raw)
    return pd.DataFrame({"text": pd.Series([t for t, _ in rows], dtype=object), "score": [s for _, s in rows]})


def _extract(archive: Path) -> Any:
    return parse_movie_scores(read_movie_snippets(archive))


register_fetched("movie-scores", "movie review sentences with their mean human sentiment score, -4 to +4 "
                 "(Hutto & Gilbert 2014 ground truth)", "vaderSentiment", "3.3.2", VADER_SOURCE, ("score",), 10605,
                 _extract, no_binary=True, columns=("text", "score"), task="regression")
