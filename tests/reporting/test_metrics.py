"""Metrics against hand-computed values."""
from __future__ import annotations

import json

import pytest

from transferkit.reporting.metrics import HEADLINE_KEYS, classification_metrics, full_report


def test_binary_by_hand() -> None:
    # TP=2 (idx 1,2), FN=1 (idx 3), FP=1 (idx 4), TN=2 (idx 0,5)
    y_true = [0, 1, 1, 1, 0, 0]
    y_pred = [0, 1, 1, 0, 1, 0]
    m = classification_metrics(y_true, y_pred, num_labels=2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # class 0: P = 2/3, R = 2/3 -> F1 = 2/3; macro and weighted (support 3/3) are also 2/3.
    assert m["f1_macro"] == pytest.approx(2 / 3)
    assert m["f1_weighted"] == pytest.approx(2 / 3)
    assert set(m) == set(HEADLINE_KEYS)


def test_binary_uses_label_one_as_positive() -> None:
    # Positive class 1: TP=1, FP=0, FN=2 -> P=1, R=1/3, F1=0.5.
    # Class 0: TP=2, FP=2, FN=0 -> P=1/2, R=1, F1=2/3.
    y_true = [1, 1, 1, 0, 0]
    y_pred = [1, 0, 0, 0, 0]
    m = classification_metrics(y_true, y_pred, num_labels=2)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["f1_weighted"] == pytest.approx((3 * 0.5 + 2 * 2 / 3) / 5)


def test_three_class_by_hand() -> None:
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    # class 0: TP=1 FP=1 FN=1 -> P=1/2 R=1/2 F1=1/2
    # class 1: TP=2 FP=1 FN=0 -> P=2/3 R=1   F1=4/5
    # class 2: TP=1 FP=0 FN=1 -> P=1   R=1/2 F1=2/3
    m = classification_metrics(y_true, y_pred, num_labels=3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    macro = (1 / 2 + 4 / 5 + 2 / 3) / 3
    assert m["f1"] == pytest.approx(macro)
    assert m["f1_macro"] == pytest.approx(macro)
    assert m["f1_weighted"] == pytest.approx(macro)  # equal supports


def test_absent_class_counts_in_macro() -> None:
    # Class 2 never appears: it scores 0 and still weighs in the macro average.
    m = classification_metrics([0, 1], [0, 1], num_labels=3)
    assert m["accuracy"] == 1.0
    assert m["f1_macro"] == pytest.approx(2 / 3)
    assert m["f1_weighted"] == pytest.approx(1.0)


@pytest.mark.parametrize("num_labels", [2, 3, 5])
def test_perfect_predictions(num_labels: int) -> None:
    y = [i % num_labels for i in range(20)]
    m = classification_metrics(y, y, num_labels)
    assert all(m[k] == 1.0 for k in HEADLINE_KEYS)


def test_no_positive_class_gives_zero_not_error() -> None:
    m = classification_metrics([0, 0, 0], [0, 0, 0], num_labels=2)
    assert m["accuracy"] == 1.0
    assert m["precision"] == m["recall"] == m["f1"] == 0.0


def test_full_report_confusion_matrix_orientation() -> None:
    # Two true "neg" predicted as "pos": that count belongs in row neg, column pos.
    y_true = [0, 0, 0, 1]
    y_pred = [1, 1, 0, 1]
    r = full_report(y_true, y_pred, ["neg", "pos"])
    assert r["confusion_matrix"] == [[1, 2], [0, 1]]
    assert r["labels"] == ["neg", "pos"]
    assert r["num_examples"] == 4


def test_full_report_per_class_and_json() -> None:
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    r = full_report(y_true, y_pred, ["a", "b", "c"])
    assert list(r["per_class"]) == ["a", "b", "c"]
    assert r["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
                                   "support": 2}
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r["f1"] == pytest.approx(classification_metrics(y_true, y_pred, 3)["f1"])
    json.dumps(r)  # plain Python types only
    assert isinstance(r["per_class"]["a"]["support"], int)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "n"),
    [([0, 1], [0], 2), ([], [], 2), ([0, 2], [0, 1], 2), ([0, -1], [0, 1], 2), ([0], [0], 1), ([0.5], [0], 2)],
)
def test_bad_input_raises(y_true: list, y_pred: list, n: int) -> None:
    with pytest.raises(ValueError):
        classification_metrics(y_true, y_pred, n)


def test_duplicate_label_names_raise() -> None:
    with pytest.raises(ValueError, match="unique"):
        full_report([0, 1], [0, 1], ["x", "x"])
