"""CLM packing loses and duplicates no token; targets are the next tokens; the gathered head matches the model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from transferkit.objectives.clm import CausalLMWrapper, CLMData, PackedBlocks


class _Stream:
    """The TokenCache interface over an in-memory array."""

    def __init__(self, tokens: np.ndarray) -> None:
        self.tokens = tokens
        self.num_tokens = len(tokens)

    def span(self, start: int, n: int) -> np.ndarray:
        return self.tokens[start:start + n]


@settings(max_examples=80, deadline=None)
@given(doc_lens=st.lists(st.integers(1, 50), min_size=1, max_size=30), block=st.integers(1, 40),
       batch=st.integers(1, 9))
def test_packing_loses_and_duplicates_nothing(doc_lens, block, batch):
    eos = 1
    stream = np.concatenate([np.r_[np.arange(2, 2 + n), eos] for n in doc_lens])  # every document ends in EOS
    blocks = PackedBlocks(_Stream(stream), block)
    lengths = blocks.lengths()
    assert all(n == block for n in lengths[:-1]) and 1 <= lengths[-1] <= block  # only the tail may be short
    rows = []
    for s in range(0, len(blocks), batch):
        idx = list(range(s, min(s + batch, len(blocks))))
        b = blocks.collate(idx, pad_id=0)
        for k in range(len(idx)):
            rows.append(b["input_ids"][k][b["attention_mask"][k].bool()].numpy())
        assert b["attention_mask"].sum() == sum(lengths[i] for i in idx)
    assert np.array_equal(np.concatenate(rows), stream)  # in order, nothing lost, nothing repeated


def test_targets_are_the_next_tokens():
    stream = np.arange(10, 33)  # 23 tokens -> blocks of 8, 8, 7
    data = CLMData(PackedBlocks(_Stream(stream), 8))
    b = data.collate([2, 0], pad_id=0)
    ids, mask = b["input_ids"], b["attention_mask"]
    assert ids.shape == (2, 8) and mask[0].sum() == 7
    flat = ids.view(-1)
    # each scored position predicts the token right after it in the same row
    assert torch.equal(b["labels"], flat[b["lm_positions"] + 1])
    assert b["labels"].numel() == 6 + 7  # width - 1 targets per row, none from padding


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_gathered_head_equals_full_logits(arch):
    import transformers as tf
    torch.manual_seed(0)
    if arch == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                                 bos_token_id=1, eos_token_id=1))
    else:
        model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                   num_attention_heads=2, num_key_value_heads=2,
                                                   intermediate_size=64, max_position_embeddings=64,
                                                   bos_token_id=1, eos_token_id=1, pad_token_id=0))
    model.eval()
    data = CLMData(PackedBlocks(_Stream(np.random.default_rng(0).integers(2, 50, 45)), 16))
    batch = data.collate([0, 1, 2], pad_id=0)  # the last block is short: padded
    labels = batch.pop("labels")
    out = CausalLMWrapper(model)(**batch)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(out.logits, full.reshape(-1, 50)[batch["lm_positions"]], rtol=1e-4, atol=1e-5)
    # the same loss transformers computes with labels shifted inside the model (padding ignored)
    hf_labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    hf = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=hf_labels).loss
    ours = torch.nn.functional.cross_entropy(out.logits, labels)
    torch.testing.assert_close(ours, hf, rtol=1e-5, atol=1e-5)
