"""NSP pairs: the NotNext share is exact, IsNext pairs are consecutive sentences of one document,
NotNext pairs come from another document; pairs collate as [CLS] A [SEP] B [SEP] with token types."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from transferkit.core.errors import UserError
from transferkit.objectives.nsp import PairData, make_pairs, mlm_nsp_loss, split_sentences


def test_split_sentences():
    text = 'Paris is a city. It is in France! Is it big? "Yes." 2020 was a year. e.g. lower stays.'
    assert split_sentences(text) == ["Paris is a city.", "It is in France!", "Is it big?", '"Yes."',
                                     "2020 was a year. e.g. lower stays."]
    assert split_sentences("One sentence only") == ["One sentence only"]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=2, max_size=40), seed=st.integers(0, 999),
       share=st.sampled_from([0.5, 0.3]))
def test_pairs_share_and_structure(sizes, seed, share):
    doc_of = np.repeat(np.arange(len(sizes)), sizes)
    if not any(n > 1 for n in sizes):
        with pytest.raises(UserError):
            make_pairs(doc_of, share, seed)
        return
    pairs = make_pairs(doc_of, share, seed)
    assert len(pairs) == sum(n - 1 for n in sizes)  # one pair per consecutive sentence pair
    a, b, label = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    assert int(label.sum()) == int(round(len(pairs) * share))  # exact NotNext share
    is_next = label == 0
    assert np.array_equal(b[is_next], a[is_next] + 1)  # IsNext: the very next sentence...
    assert np.array_equal(doc_of[b[is_next]], doc_of[a[is_next]])  # ...of the same document
    assert (doc_of[b[~is_next]] != doc_of[a[~is_next]]).all()  # NotNext: another document
    assert np.array_equal(np.sort(a), np.flatnonzero(doc_of[:-1] == doc_of[1:]))


def test_pairs_are_seeded():
    doc_of = np.repeat(np.arange(20), 5)
    assert np.array_equal(make_pairs(doc_of, 0.5, 1), make_pairs(doc_of, 0.5, 1))
    assert not np.array_equal(make_pairs(doc_of, 0.5, 1), make_pairs(doc_of, 0.5, 2))


class _Rows:
    def __init__(self, rows):
        self.rows = [np.asarray(r) for r in rows]

    def row(self, i):
        return self.rows[i]

    def row_lengths(self):
        return np.array([len(r) for r in self.rows])


def test_pair_collate_and_truncation():
    rows = _Rows([[10, 11, 12], [20, 21], list(range(30, 50)), [60]])
    pairs = np.array([[0, 1, 0], [2, 3, 1]])
    data = PairData(rows, pairs, cls_id=2, sep_id=3, max_length=12)
    assert data.lengths() == [8, 12]
    b = data.collate([0, 1], pad_id=0)
    assert b["input_ids"][0].tolist() == [2, 10, 11, 12, 3, 20, 21, 3, 0, 0, 0, 0]
    assert b["token_type_ids"][0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert b["attention_mask"][0].sum() == 8
    # longest first: A is cut to 8 tokens so that A + B + 3 specials fit 12
    assert b["input_ids"][1].tolist() == [2, *range(30, 38), 3, 60, 3]
    assert b["next_sentence_label"].tolist() == [0, 1]


def test_joint_loss_is_mean_plus_mean():
    from transferkit.objectives import LMOutput
    torch.manual_seed(0)
    out = LMOutput(torch.randn(6, 9), torch.randn(3, 2))
    batch = {"labels": torch.randint(0, 9, (6,)), "next_sentence_label": torch.tensor([0, 1, 1])}
    loss, n, _ = mlm_nsp_loss(out, batch)
    expected = (torch.nn.functional.cross_entropy(out.logits, batch["labels"])
                + torch.nn.functional.cross_entropy(out.nsp_logits, batch["next_sentence_label"]))
    torch.testing.assert_close(loss / n, expected)
