"""Entity-level scores of a tagger (seqeval in strict IOB2 mode, as conlleval counts them) and token
accuracy: what evaluation, the report and `compare` read."""
from __future__ import annotations

from typing import Any


def entity_metrics(gold: list[list[str]], pred: list[list[str]]) -> dict[str, Any]:
    """Entity-level micro precision/recall/F1 in strict IOB2 mode (an I- with no B- is no entity),
    per-type scores, and token accuracy."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2
    kw = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    per_type = classification_report(gold, pred, output_dict=True, **kw)
    tokens = sum(len(s) for s in gold)
    right = sum(g == p for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
    return {"precision": float(precision_score(gold, pred, **kw)), "recall": float(recall_score(gold, pred, **kw)),
            "f1": float(f1_score(gold, pred, **kw)), "token_accuracy": right / max(tokens, 1),
            "per_type": {t: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                             "f1": float(v["f1-score"]), "support": int(v["support"])}
                         for t, v in per_type.items() if t not in ("micro avg", "macro avg", "weighted avg")}}
