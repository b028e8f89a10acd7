"""dedupe and stratified_split: majority/tie rules, determinism, stratification, disjoint splits."""
from __future__ import annotations

import logging
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferkit.data import dedupe, split_sizes, stratified_split
from transferkit.core.errors import UserError


def make(n_per_class: dict[str, int]) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for lab, n in n_per_class.items():
        texts += [f"{lab} text {i}" for i in range(n)]
        labels += [lab] * n
    return texts, labels


# --- dedupe ----------------------------------------------------------------------------------

def test_dedupe_majority_and_order():
    texts = ["b", "a", " a ", "a", "c", "b"]
    labels = ["x", "pos", "neg", "pos", "y", "x"]
    t, y, rep = dedupe(texts, labels)
    assert t == ["b", "a", "c"]  # first-occurrence order, stripped
    assert y == ["x", "pos", "y"]
    assert rep.rows_in == 6 and rep.rows_out == 3
    assert rep.duplicates_removed == 3 and rep.conflicts_removed == 0 and rep.relabelled == 1


def test_dedupe_tie_dropped():
    texts = ["tie", "tie", "keep", "tie3", "tie3", "tie3"]
    labels = ["a", "b", "a", "a", "b", "c"]
    t, y, rep = dedupe(texts, labels)
    assert t == ["keep"] and y == ["a"]
    assert rep.conflicts_removed == 2 and rep.conflict_rows_removed == 5 and rep.duplicates_removed == 0
    assert rep.rows_in == rep.rows_out + rep.duplicates_removed + rep.conflict_rows_removed
    assert "tied labels" in str(rep) and rep.as_dict()["conflicts_removed"] == 2


def test_dedupe_no_duplicates_is_identity():
    texts, labels = make({"a": 3, "b": 2})
    t, y, rep = dedupe(texts, labels)
    assert (t, y) == (texts, labels) and rep.duplicates_removed == 0


# --- stratified_split ------------------------------------------------------------------------

def test_split_sizes():
    assert split_sizes(100, (0.8, 0.1, 0.1)) == (80, 10, 10)
    assert split_sizes(5, (0.8, 0.1, 0.1)) == (3, 1, 1)  # a nonzero fraction gets a row
    assert split_sizes(10, (0.9, 0.0, 0.1)) == (9, 0, 1)
    with pytest.raises(UserError, match="summing to 1"):
        split_sizes(10, (0.5, 0.5, 0.5))


def test_split_deterministic_and_seeded():
    texts, labels = make({"a": 60, "b": 40})
    s1 = stratified_split(texts, labels, seed=7)
    s2 = stratified_split(texts, labels, seed=7)
    s3 = stratified_split(texts, labels, seed=8)
    assert s1 == s2
    assert s1["test"][0] != s3["test"][0]


def test_split_stratified_and_disjoint():
    texts, labels = make({"a": 600, "b": 300, "c": 100})
    s = stratified_split(texts, labels, (0.8, 0.1, 0.1), seed=42)
    assert [len(s[k][0]) for k in ("train", "validation", "test")] == [800, 100, 100]
    for k, frac in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        assert Counter(s[k][1]) == {"a": 600 * frac, "b": 300 * frac, "c": 100 * frac}
    seen = [set(s[k][0]) for k in ("train", "validation", "test")]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert seen[0] | seen[1] | seen[2] == set(texts)
    for k in s:  # each text keeps its own label
        assert all(t.startswith(y) for t, y in zip(*s[k]))


def test_empty_validation_needs_permission():
    texts, labels = make({"a": 10, "b": 10})
    with pytest.raises(UserError, match="validation split empty"):
        stratified_split(texts, labels, (0.9, 0.0, 0.1))
    s = stratified_split(texts, labels, (0.9, 0.0, 0.1), allow_empty_validation=True)
    assert s["validation"] == ([], []) and len(s["test"][0]) == 2


def test_empty_test_or_train_rejected():
    texts, labels = make({"a": 10, "b": 10})
    with pytest.raises(UserError, match="test split empty"):
        stratified_split(texts, labels, (0.9, 0.1, 0.0))
    with pytest.raises(UserError, match="training split would be empty"):
        stratified_split(texts[:2], labels[:2], (0.8, 0.1, 0.1))


def test_fallback_to_random_split_warns(caplog):
    texts, labels = make({"a": 20, "b": 20, "rare": 1})
    s = stratified_split(texts, labels, seed=1)  # a warning: shown without asking for INFO lines
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "stratified split impossible" in caplog.messages[0] and "class 'rare' has only 1 row" in caplog.messages[0]
    assert sum(len(s[k][0]) for k in s) == 41


@settings(max_examples=30, deadline=None)
@given(counts=st.lists(st.integers(min_value=2, max_value=30), min_size=2, max_size=4),
       seed=st.integers(min_value=0, max_value=10_000))
def test_split_partitions_property(counts, seed):
    texts, labels = make({f"c{i}": n for i, n in enumerate(counts)})
    s = stratified_split(texts, labels, seed=seed)
    parts = [s[k][0] for k in ("train", "validation", "test")]
    assert sorted(t for p in parts for t in p) == sorted(texts)
    assert all(len(p) > 0 for p in parts)
