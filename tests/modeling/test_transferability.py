"""LogME: the evidence it maximises, and the order it gives features whose quality is known."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferkit.modeling.transferability import logme, targets


def _evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence of y under y = f w + noise, written out with matrices (no SVD), per example."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, logdet = np.linalg.slogdet(a)
    return (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * float(((f @ m - y) ** 2).sum()) - alpha / 2 * float(m @ m) - logdet / 2) / n


@pytest.mark.parametrize("n,d", [(200, 8), (30, 60)])  # more rows than features, and fewer
def test_the_score_is_the_maximum_of_the_evidence(n, d):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(n, d))
    f -= f.mean(axis=0)  # logme centres features and targets; the written-out evidence reads them as they are
    y = f @ rng.normal(size=d) * 0.3 + rng.normal(size=n)
    y -= y.mean()
    grid = np.logspace(-3, 3, 61)
    best = max(_evidence(f, y, a, b) for a in grid for b in grid)
    got = logme(f, y[:, None])
    assert got >= best - 1e-3  # the fixed point is at least as good as the best grid point ...
    assert got <= best + 0.05 * abs(best)  # ... and no better than the evidence allows


def _labelled(kind: str, n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(informative features, noise features, targets) for a classification, regression or multi-label toy."""
    rng = np.random.default_rng(seed)
    if kind == "classes":
        labels = torch.tensor(rng.integers(0, 3, n))
        signal = np.eye(3)[labels.numpy()]
        y = targets(labels, 3)
    elif kind == "numbers":
        labels = torch.tensor(rng.normal(5.0, 2.0, (n, 1)), dtype=torch.float32)
        signal = labels.numpy()
        y = targets(labels, 1)
    else:
        labels = torch.tensor(rng.integers(0, 2, (n, 4)), dtype=torch.float32)
        signal = labels.numpy()
        y = targets(labels, 4)
    mix = rng.normal(size=(signal.shape[1], 16))
    return signal @ mix + rng.normal(size=(n, 16)), rng.normal(size=(n, 16)), y


@pytest.mark.parametrize("kind", ["classes", "numbers", "label sets"])
def test_features_that_carry_the_labels_score_higher_than_noise(kind):
    good, noise, y = _labelled(kind)
    half = 0.5 * good + 0.5 * noise
    assert logme(good, y) > logme(half, y) > logme(noise, y)


def test_targets_are_one_hot_columns_indicators_or_standardised_numbers():
    assert targets(torch.tensor([0, 2, 1]), 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert targets(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 2).tolist() == [[1, 0], [0, 1]]
    z = targets(torch.tensor([[1.0], [2.0], [3.0]]), 1)
    assert abs(z.mean()) < 1e-9 and abs(z.std() - 1) < 1e-9


def test_a_target_that_never_varies_does_not_rank_encoders_by_their_width():
    """A class absent from the sample is an all-zero column: scored, it would add an unbounded term that grows as
    the features narrow, and reverse the order of the encoders."""
    rng = np.random.default_rng(0)
    labels = torch.tensor(rng.integers(0, 2, 300))
    y2, y3 = targets(labels, 2), targets(labels, 3)  # the third class never occurs
    narrow = np.eye(2)[labels.numpy()] @ rng.normal(size=(2, 8)) + 2.0 * rng.normal(size=(300, 8))
    wide = np.eye(2)[labels.numpy()] @ rng.normal(size=(2, 200)) + 0.5 * rng.normal(size=(300, 200))
    assert logme(wide, y3) == pytest.approx(logme(wide, y2)) and logme(narrow, y3) == pytest.approx(logme(narrow, y2))
    with pytest.raises(ValueError, match="varies"):
        logme(wide, np.ones((300, 1)))


def test_too_few_rows_or_mismatched_shapes_are_refused():
    with pytest.raises(ValueError):
        logme(np.zeros((1, 4)), np.zeros((1, 1)))
    with pytest.raises(ValueError):
        logme(np.zeros((5, 4)), np.zeros((4, 1)))


def test_an_intercept_is_free_shifting_features_or_targets_changes_nothing():
    """A head has a bias: a constant added to every vector, or 0/1 columns against their centred version, must not
    move the score (without the intercept, one-hot columns' mean of 0.5 sank informative features to noise level)."""
    good, noise, y = _labelled("classes")
    base = logme(good, y)
    assert logme(good + 50.0, y) == pytest.approx(base, abs=1e-6)
    assert logme(good, y - y.mean(axis=0)) == pytest.approx(base, abs=1e-6)
    assert base - logme(noise, y) > 0.2
