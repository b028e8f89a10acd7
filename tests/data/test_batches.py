"""Inference batches: longest first, bounded in rows and (on a CPU) in padded tokens."""
from __future__ import annotations

import random

import pytest

from transferkit.data.batches import CPU_BATCH_TOKENS, batch_tokens, sorted_batches


def test_rows_alone_bound_a_batch_without_a_token_budget():
    assert sorted_batches([3, 9, 1, 5, 7], 2) == [[1, 4], [3, 0], [2]]


@pytest.mark.parametrize("seed", range(5))
def test_token_budget_bounds_padded_tokens(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 80) for _ in range(300)] + [600]  # one row longer than the budget
    batches = sorted_batches(lengths, 64, max_tokens=512)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every row exactly once
    assert batches[0] == [300]  # the over-long row goes alone
    for b in batches[1:]:
        assert len(b) <= 64 and len(b) * max(lengths[i] for i in b) <= 512
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    # batches are as full as the budget allows: one more row of the next batch would not fit
    for b, nxt in zip(batches[1:], batches[2:]):
        assert len(b) == 64 or (len(b) + 1) * lengths[b[0]] > 512


def test_only_a_cpu_gets_a_token_budget():
    assert batch_tokens("cpu") == CPU_BATCH_TOKENS
    assert batch_tokens("cuda") is None
