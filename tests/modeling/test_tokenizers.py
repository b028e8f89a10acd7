"""Tokenizers trained on a small corpus round-trip text and save in the Hugging Face format."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from transferkit.core.errors import UserError
from transferkit.modeling.tokenizers import kind_for_arch, train_tokenizer

from helpers import make_sentences

CORPUS = [t for t, _ in make_sentences(400)] + ["Paris is the capital of France.", "Ünïcode café costs 12€!"]


def test_wordpiece_round_trip_and_specials(tmp_path):
    tok = train_tokenizer(CORPUS, "wordpiece", vocab_size=150, out_dir=tmp_path)
    assert len(tok) <= 150
    text = "the acting was really superb and the ending quite dull"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert any(t.startswith("##") for t in tok.get_vocab())  # a real WordPiece vocabulary
    pair = tok("good film", "bad plot")
    assert pair["token_type_ids"] == [0] * 4 + [1] * 3
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text)["input_ids"] == ids
    assert (loaded.mask_token, loaded.pad_token, loaded.cls_token) == ("[MASK]", "[PAD]", "[CLS]")


def test_byte_level_bpe_round_trips_any_text(tmp_path):
    tok = train_tokenizer(CORPUS, "bpe", vocab_size=400, out_dir=tmp_path)
    for text in ["the movie was great", "Ünïcode café costs 12€!  Two  spaces\nand a newline", "日本語"]:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text  # byte-level: nothing is unknown, nothing is lost
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.eos_token == "<|endoftext|>" and loaded.pad_token == "<|pad|>"
    assert loaded.pad_token_id != loaded.eos_token_id


def test_kind_and_bad_input():
    assert kind_for_arch("bert") == "wordpiece" and kind_for_arch("llama") == "bpe"
    with pytest.raises(UserError, match="unknown tokenizer kind 'sentencepiece'"):
        train_tokenizer(CORPUS, "sentencepiece")
    with pytest.raises(UserError, match="vocab_size"):
        train_tokenizer(CORPUS, "bpe", vocab_size=10)
