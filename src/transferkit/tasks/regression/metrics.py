"""Regression metrics per target: mean squared and absolute error in the targets' units, Pearson's and
Spearman's correlation (scipy); the headline values are their means over the targets. A correlation that is
undefined (constant predictions or targets) is reported as 0.0, so early stopping and `tune` always compare
numbers."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def _corr(fn: Any, a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    r = float(fn(a, b)[0])
    return r if math.isfinite(r) else 0.0


def regression_metrics(y_true: Any, y_pred: Any, names: Sequence[str]) -> dict[str, Any]:
    """{"mse", "mae", "rmse", "pearson", "spearman"} (means over targets) and, per target, the same under
    "per_target"; `y_true`, `y_pred` are [n, targets]."""
    from scipy.stats import pearsonr, spearmanr
    t = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    per = {}
    for k, name in enumerate(names):
        err = p[:, k] - t[:, k]
        per[name] = {"mse": float(np.mean(err ** 2)) if len(err) else 0.0,
                     "mae": float(np.mean(np.abs(err))) if len(err) else 0.0,
                     "pearson": _corr(pearsonr, p[:, k], t[:, k]),
                     "spearman": _corr(spearmanr, p[:, k], t[:, k]),
                     "support": int(len(err))}
    out: dict[str, Any] = {key: float(np.mean([v[key] for v in per.values()]))
                           for key in ("mse", "mae", "pearson", "spearman")}
    out["rmse"] = float(np.mean([math.sqrt(v["mse"]) for v in per.values()]))
    out["per_target"] = per
    return out
