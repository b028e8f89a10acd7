"""Generation metrics: ROUGE-1/2/L F1 (Google's `rouge-score` package, the reimplementation of ROUGE-1.5.5
that Hugging Face `evaluate` and TRL's examples use, with its Porter stemmer) and exact match after folding case
and spaces. Each is the mean over examples, as a fraction; `rougeL` is the headline (`compare`, early stopping
when asked)."""
from __future__ import annotations

from typing import Any, Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def example_scores(references: Sequence[str], outputs: Sequence[str]) -> list[dict[str, float]]:
    """Per example: ROUGE-1/2/L F1 and exact match (1.0 or 0.0)."""
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rows = []
    for ref, out in zip(references, outputs):
        s = scorer.score(ref, out)
        rows.append({**{k: float(s[k].fmeasure) for k in ROUGE_TYPES},
                     "exact_match": float(_fold(ref) == _fold(out))})
    return rows


def generation_metrics(references: Sequence[str], outputs: Sequence[str]) -> tuple[dict[str, float], list[dict]]:
    """(mean ROUGE-1/2/L and exact match with the example count, the per-example scores)."""
    rows = example_scores(references, outputs)
    n = max(len(rows), 1)
    means: dict[str, Any] = {k: sum(r[k] for r in rows) / n for k in (*ROUGE_TYPES, "exact_match")}
    means["mean_output_words"] = sum(len(o.split()) for o in outputs) / n
    return means, rows
