"""Classification metrics from label ids: headline numbers, per-class table, confusion matrix.

Everything is a fraction in [0, 1] and a plain Python type, so the results go straight into
JSON. Precision, recall and `f1` are binary (positive class = label id 1) for two labels and
macro-averaged for more; `f1_macro` and `f1_weighted` are always reported for comparison.
The loss is not computed here: it needs the model's logits, which the trainer owns.

Labels are always passed explicitly as `range(num_labels)`, so a class that is absent from
both `y_true` and `y_pred` still counts (with zero scores) in the macro average and in the
confusion matrix; the numbers never depend on which classes happen to appear in a split.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

HEADLINE_KEYS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "f1_macro", "f1_weighted")
"""Keys of `classification_metrics`, in the order reports show them."""


def average_mode(num_labels: int) -> str:
    """The sklearn `average` used for precision/recall/f1: 'binary' for 2 labels, else 'macro'."""
    return "binary" if num_labels == 2 else "macro"


def _as_label_ids(values: Sequence[int], name: str, num_labels: int) -> np.ndarray:
    """Return `values` as a 1-d int array, checking every id is in [0, num_labels)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of label ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        # Floats such as 1.0 are accepted only when they are whole numbers; 0.7 is a bug upstream.
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer label ids")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= num_labels)
    if bad.any():
        raise ValueError(f"{name} holds label id {int(arr[bad][0])}, outside 0..{num_labels - 1}")
    return arr


def _checked(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a pair of label-id sequences."""
    if num_labels < 2:
        raise ValueError(f"num_labels must be at least 2, got {num_labels}")
    true = _as_label_ids(y_true, "y_true", num_labels)
    pred = _as_label_ids(y_pred, "y_pred", num_labels)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}")
    if true.size == 0:
        raise ValueError("no examples to score")
    return true, pred


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy, precision, recall, f1, f1_macro and f1_weighted as fractions in [0, 1]."""
    true, pred = _checked(y_true, y_pred, num_labels)
    labels = list(range(num_labels))
    precision, recall, f1, _ = precision_recall_fscore_support(
        true, pred, labels=labels, average=average_mode(num_labels), pos_label=1, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(true, pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "f1_macro": float(f1_score(true, pred, labels=labels, average="macro", zero_division=0)),
        "f1_weighted": float(f1_score(true, pred, labels=labels, average="weighted", zero_division=0)),
    }


def full_report(y_true: Sequence[int], y_pred: Sequence[int], label_names: list[str]) -> dict[str, Any]:
    """Headline metrics plus `per_class`, `confusion_matrix` (rows = true), `labels` and `num_examples`."""
    names = [str(name) for name in label_names]
    if len(set(names)) != len(names):
        # per_class is keyed by name, so duplicates would silently overwrite each other.
        raise ValueError(f"label names must be unique, got {names}")
    num_labels = len(names)
    true, pred = _checked(y_true, y_pred, num_labels)
    labels = list(range(num_labels))

    report: dict[str, Any] = classification_metrics(true, pred, num_labels)
    raw = classification_report(
        true, pred, labels=labels, target_names=names, output_dict=True, zero_division=0
    )
    report["per_class"] = {
        name: {
            "precision": float(raw[name]["precision"]),
            "recall": float(raw[name]["recall"]),
            "f1": float(raw[name]["f1-score"]),
            "support": int(raw[name]["support"]),
        }
        for name in names
    }
    cm = confusion_matrix(true, pred, labels=labels)
    report["confusion_matrix"] = [[int(v) for v in row] for row in cm]
    report["labels"] = names
    report["num_examples"] = int(true.size)
    return report


COLLAPSE_SHARE = 0.9  # one class in at least this share of the predictions ...
COLLAPSE_MARGIN = 0.15  # ... and this far above its share of the true labels


def collapse_warning(predicted: Sequence[int], true: Sequence[int], label_names: Sequence[str],
                     split: str) -> str | None:
    """A warning when one class takes nearly all predictions, far beyond its share of the true labels."""
    if not predicted:
        return None
    label, n = Counter(predicted).most_common(1)[0]
    share, true_share = n / len(predicted), sum(1 for y in true if y == label) / max(len(true), 1)
    if share < COLLAPSE_SHARE or share - true_share < COLLAPSE_MARGIN:
        return None
    return (f"warning: the model predicts {label_names[label]} for {100 * share:.0f}% of the {split} texts "
            f"(true share {100 * true_share:.0f}%): it has barely learned the other classes; try "
            "train.class_weights=balanced, more epochs, another lr or method, or more data")
