"""BERT masking: exact 15% selection, the 80/10/10 split, never special or padding, -100 elsewhere;
gathering the selected positions gives the same logits as the full MLM head."""
from __future__ import annotations

import torch
from hypothesis import given, settings, strategies as st

from transferkit.objectives.mlm import Masker, MaskedLMWrapper, MLMData

VOCAB = 60
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = [PAD, UNK, CLS, SEP, MASK]
CONT = list(range(50, 60))  # '##' continuation tokens for whole-word masking


def _batch(seed: int, bsz: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of [CLS] words... [SEP] (a [SEP] inside too) and right padding of random length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (bsz, width), generator=g)
    lens = torch.randint(3, width + 1, (bsz,), generator=g)
    mask = (torch.arange(width)[None, :] < lens[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(bsz), lens - 1] = SEP
    ids[:, width // 2] = torch.where(lens > width // 2 + 1, torch.tensor(SEP), ids[:, width // 2])
    ids[mask == 0] = PAD
    return ids, mask


def _candidates(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    special = torch.zeros(VOCAB, dtype=torch.bool)
    special[SPECIAL] = True
    return mask.bool() & ~special[ids]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), bsz=st.integers(1, 16), width=st.integers(3, 80),
       p=st.sampled_from([0.15, 0.3, 0.05]))
def test_selection_is_exact_and_never_special_or_padding(seed, bsz, width, p):
    ids, mask = _batch(seed, bsz, width)
    masker = Masker(VOCAB, MASK, SPECIAL, probability=p)
    masked, labels = masker(ids, mask, torch.Generator().manual_seed(seed + 1))
    selected = labels != -100
    cand = _candidates(ids, mask)
    assert not (selected & ~cand).any()  # never special, never padding
    assert torch.equal(labels[selected], ids[selected])  # labels hold the original token...
    assert (labels[~selected] == -100).all()  # ...and -100 exactly where not selected
    n = cand.sum(1)
    expected = torch.where(n > 0, (n.double() * p).round().long().clamp(min=1), torch.zeros_like(n))
    assert torch.equal(selected.sum(1), expected)  # BERT: round(p x candidates) per sequence
    assert torch.equal(masked[~selected], ids[~selected])  # unselected tokens are untouched
    assert masked.shape == ids.shape and masked.dtype == ids.dtype


def test_share_and_80_10_10_over_many_batches():
    masker = Masker(VOCAB, MASK, SPECIAL)
    sel = cand = to_mask = to_random = kept = 0
    for seed in range(200):
        ids, mask = _batch(seed, 16, 128)
        masked, labels = masker(ids, mask, torch.Generator().manual_seed(10_000 + seed))
        s = labels != -100
        sel += int(s.sum())
        cand += int(_candidates(ids, mask).sum())
        to_mask += int((masked[s] == MASK).sum())
        to_random += int(((masked[s] != MASK) & (masked[s] != ids[s])).sum())
        kept += int((masked[s] == ids[s]).sum())
    assert abs(sel / cand - 0.15) < 0.005
    # a random replacement equals the original with probability 1/55, so "kept" is a little above 10%
    assert abs(to_mask / sel - 0.8) < 0.01
    assert abs(to_random / sel - 0.1 * 54 / 55) < 0.01
    assert abs(kept / sel - (0.1 + 0.1 / 55)) < 0.01
    # random replacements are ordinary tokens, never special ones
    ids, mask = _batch(1, 64, 128)
    masked, labels = masker(ids, mask)
    rnd = (labels != -100) & (masked != MASK) & (masked != ids)
    assert rnd.any() and (masked[rnd] >= 5).all()


def test_configurable_rates():
    masker = Masker(VOCAB, MASK, SPECIAL, probability=0.4, mask_replace=0.5, random_replace=0.5)
    ids, mask = _batch(3, 64, 128)
    masked, labels = masker(ids, mask, torch.Generator().manual_seed(0))
    s = labels != -100
    assert abs(int(s.sum()) / int(_candidates(ids, mask).sum()) - 0.4) < 0.01
    assert abs(float((masked[s] == MASK).float().mean()) - 0.5) < 0.05
    assert float((masked[s] == ids[s]).float().mean()) < 0.03  # 0% kept (only random collisions)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_whole_word_masking_takes_whole_words(seed):
    ids, mask = _batch(seed, 8, 64)
    masker = Masker(VOCAB, MASK, SPECIAL, continuation_ids=CONT)
    _, labels = masker(ids, mask, torch.Generator().manual_seed(seed))
    selected = labels != -100
    cand = _candidates(ids, mask)
    assert not (selected & ~cand).any()
    is_cont = torch.zeros(VOCAB, dtype=torch.bool)
    is_cont[CONT] = True
    for r in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            if cand[r, t] and cand[r, t - 1] and is_cont[ids[r, t]]:  # same word as the token before
                assert selected[r, t] == selected[r, t - 1]
        if cand[r].any():
            assert selected[r].any()
            k = max(round(0.15 * int(cand[r].sum())), 1)
            starts = selected[r] & ~(is_cont[ids[r]] & torch.cat([torch.tensor([False]), selected[r][:-1]]))
            # within the budget, unless a single word alone exceeds it
            assert int(selected[r].sum()) <= k or int(starts.sum()) == 1


def test_every_word_can_be_selected():
    """Uniform over words: the word before [SEP] or padding is chosen as often as the others."""
    words = list(range(10, 30))  # 20 one-token words, a [SEP] after the 10th and after the last
    row = torch.tensor([[CLS, *words[:10], SEP, *words[10:], SEP, PAD, PAD]])
    mask = (row != PAD).long()
    counts = torch.zeros(row.shape[1])
    for seed in range(400):
        _, labels = Masker(VOCAB, MASK, SPECIAL, continuation_ids=CONT)(row, mask, torch.Generator().manual_seed(seed))
        counts += (labels[0] != -100).float()
    per_word = counts[(row[0] >= 10) & (row[0] < 30)] / 400  # each word: 3 of 20 taken, 0.15
    assert per_word.min() > 0.08 and abs(float(per_word.mean()) - 0.15) < 0.01, per_word


def test_whole_word_share_near_target():
    masker = Masker(VOCAB, MASK, SPECIAL, continuation_ids=CONT)
    sel = cand = 0
    for seed in range(100):
        ids, mask = _batch(seed, 16, 128)
        _, labels = masker(ids, mask, torch.Generator().manual_seed(seed))
        sel += int((labels != -100).sum())
        cand += int(_candidates(ids, mask).sum())
    assert 0.12 < sel / cand <= 0.155


class _Blocks:
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def lengths(self):
        return [len(r) for r in self.rows]

    def collate(self, idx, pad_id):
        ids = torch.full((len(idx), max(len(self.rows[i]) for i in idx)), pad_id)
        mask = torch.zeros_like(ids)
        for k, i in enumerate(idx):
            ids[k, :len(self.rows[i])] = torch.tensor(self.rows[i])
            mask[k, :len(self.rows[i])] = 1
        return {"input_ids": ids, "attention_mask": mask}


def test_gathered_head_equals_full_head():
    from transformers import BertConfig, BertForMaskedLM
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=64)).eval()
    rows = [[CLS] + torch.randint(5, VOCAB, (n,)).tolist() + [SEP] for n in (20, 7, 33)]
    data = MLMData(_Blocks(rows), Masker(VOCAB, MASK, SPECIAL), fixed_seed=1)
    batch = data.collate([0, 1, 2], PAD)
    again = data.collate([0, 1, 2], PAD)  # held-out masks are the same every time
    assert torch.equal(batch["input_ids"], again["input_ids"])
    labels = batch.pop("labels")
    out = MaskedLMWrapper(model)(**batch)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    flat = full.reshape(-1, VOCAB)[batch["mlm_positions"]]
    assert out.logits.shape == (labels.numel(), VOCAB)
    torch.testing.assert_close(out.logits, flat, rtol=1e-5, atol=1e-5)
    assert torch.equal(labels, torch.cat([torch.tensor(r + [PAD] * (35 - len(r))) for r in rows])[batch["mlm_positions"]])
