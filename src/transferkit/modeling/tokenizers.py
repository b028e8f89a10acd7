"""Train a tokenizer on a corpus with the `tokenizers` library and wrap it for transformers.

WordPiece (BERT-style: lower-cased, [CLS] A [SEP] B [SEP], '##' continuations) for encoders,
byte-level BPE (GPT-2-style: any text round-trips exactly, <|endoftext|> ends documents) for
decoders. The result is a `PreTrainedTokenizerFast` with its special tokens set, saved in the
Hugging Face format (tokenizer.json + tokenizer_config.json) so `AutoTokenizer` loads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from ..core.errors import UserError

KINDS = ("wordpiece", "bpe")
BERT_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                 "mask_token": "[MASK]"}
GPT_SPECIALS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                "pad_token": "<|pad|>"}


def kind_for_arch(arch: str) -> str:
    """WordPiece for BERT-style encoders, byte-level BPE for GPT-2/Llama-style decoders."""
    return "wordpiece" if arch == "bert" else "bpe"


def train_tokenizer(texts: Iterable[str], kind: str = "wordpiece", vocab_size: int = 16000,
                    min_frequency: int = 2, out_dir: str | Path | None = None) -> Any:
    """A `PreTrainedTokenizerFast` trained on `texts`; saved to `out_dir` when given."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind not in KINDS:
        raise UserError(f"unknown tokenizer kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if vocab_size < 100:
        raise UserError(f"vocab_size must be >= 100, got {vocab_size}")
    if kind == "wordpiece":
        specials = list(dict.fromkeys(BERT_SPECIALS.values()))
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                            special_tokens=specials, continuing_subword_prefix="##")
        tok.train_from_iterator(texts, trainer=trainer)
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, **BERT_SPECIALS, model_max_length=512,
                                       model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    else:
        specials = list(dict.fromkeys(GPT_SPECIALS.values()))
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, **GPT_SPECIALS, model_max_length=512)
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast
