"""Multi-label metrics (scikit-learn): F1 averaged three ways (micro: over every label decision; macro: the
mean of the per-label F1; samples: the mean of each text's F1), subset accuracy (every label of a text
right), and precision / recall / F1 / support per label."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def multilabel_metrics(y_true: Any, y_pred: Any, names: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
    t = np.asarray(y_true, dtype=np.int64).reshape(-1, len(names))
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1, len(names))
    if not len(t):
        return {"f1_micro": 0.0, "f1_macro": 0.0, "f1_samples": 0.0, "subset_accuracy": 0.0, "per_label": {}}
    out: dict[str, Any] = {f"f1_{avg}": float(f1_score(t, p, average=avg, zero_division=0))
                           for avg in ("micro", "macro")}
    # a text with no label and none predicted is right: F1 1 for it (zero_division=1)
    out["f1_samples"] = float(f1_score(t, p, average="samples", zero_division=1))
    out["precision_micro"], out["recall_micro"], _, _ = (
        float(x) if x is not None else 0.0 for x in precision_recall_fscore_support(t, p, average="micro",
                                                                                     zero_division=0))
    out["subset_accuracy"] = float(accuracy_score(t, p))
    prec, rec, f1, support = precision_recall_fscore_support(t, p, average=None, zero_division=0)
    out["per_label"] = {n: {"precision": float(a), "recall": float(b), "f1": float(c), "support": int(d)}
                        for n, a, b, c, d in zip(names, prec, rec, f1, support)}
    return out


def tune_thresholds(probs: np.ndarray, y_true: np.ndarray, grid: Sequence[float] | None = None) -> list[float]:
    """Per label the probability threshold in `grid` (0.05, 0.10, ..., 0.95) with the best F1 of that label on
    (`probs`, `y_true`) [n, labels]; ties go to the threshold nearest 0.5, and a label with no positive row
    keeps 0.5."""
    grid = list(grid) if grid is not None else [round(0.05 * k, 2) for k in range(1, 20)]
    out = []
    for k in range(probs.shape[1]):
        truth = y_true[:, k].astype(bool)
        if not truth.any():
            out.append(0.5)
            continue
        best, best_t = -1.0, 0.5
        for t in sorted(grid, key=lambda x: abs(x - 0.5)):
            pred = probs[:, k] >= t
            tp = int((pred & truth).sum())
            f1 = 2 * tp / max(int(pred.sum()) + int(truth.sum()), 1)
            if f1 > best + 1e-12:
                best, best_t = f1, t
        out.append(best_t)
    return out
