"""Masked LM as in BERT: select 15% of the real tokens, replace 80% of those with [MASK], 10% with a
random token, keep 10%; score only the selected positions.

Written here rather than taken from `DataCollatorForLanguageModeling` for two reasons: BERT picks
*exactly* round(15% x n) tokens per sequence (the collator draws each token independently, so a
sequence may get none), and the batch must say *where* the selected tokens are, so the model
wrapper can gather those hidden states and run the vocabulary projection on them alone: with
15% selected that is ~1/7 of the projection a full-sequence MLM head computes, which is most of
the pretraining speed-up on small models with large vocabularies. Optional whole-word masking
treats a WordPiece word (a token and its '##' continuations) as one unit.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..core.registry import OBJECTIVES
from ..data.corpus import build_cache
from . import LMOutput, Objective, head_alias
from .clm import PackedBlocks, separator_id


class Masker:
    """BERT masking over a batch: returns (masked input_ids, labels with -100 where not selected)."""

    def __init__(self, vocab_size: int, mask_id: int, special_ids: Sequence[int], probability: float = 0.15,
                 mask_replace: float = 0.8, random_replace: float = 0.1,
                 continuation_ids: Sequence[int] | None = None) -> None:
        self.mask_id, self.p = mask_id, probability
        self.mask_replace, self.random_replace = mask_replace, random_replace
        self.special = torch.zeros(vocab_size, dtype=torch.bool)
        self.special[[i for i in special_ids if i is not None and 0 <= i < vocab_size]] = True
        self.allowed = (~self.special).nonzero().squeeze(1)  # random replacements are ordinary tokens
        self.continuation = None
        if continuation_ids is not None:
            self.continuation = torch.zeros(vocab_size, dtype=torch.bool)
            self.continuation[list(continuation_ids)] = True

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, vocab_size: int, probability: float = 0.15, mask_replace: float = 0.8,
                      random_replace: float = 0.1, whole_word: bool = False) -> "Masker":
        cont = None
        if whole_word:
            cont = [i for t, i in tokenizer.get_vocab().items() if t.startswith("##") and i < vocab_size]
            if not cont:
                from ..core.errors import UserError
                raise UserError("whole_word_mask needs a WordPiece tokenizer ('##' continuation tokens); "
                                f"{type(tokenizer).__name__} has none")
        return cls(vocab_size, tokenizer.mask_token_id, tokenizer.all_special_ids, probability, mask_replace,
                   random_replace, cont)

    def select(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool [batch, seq]: exactly round(p x candidates) tokens per row (at least one), never special or padding."""
        cand = attention_mask.bool() & ~self.special[input_ids]  # [batch, seq]
        n = cand.sum(1)
        k = torch.where(n > 0, (n.double() * self.p).round().long().clamp(min=1), torch.zeros_like(n))  # [batch]
        if self.continuation is None:
            scores = torch.rand(input_ids.shape, generator=generator).masked_fill(~cand, 2.0)
            ranks = scores.argsort(1).argsort(1)  # rank of each token in a random order of the candidates
            return ranks < k[:, None]
        return self._select_words(input_ids, cand, k, generator)

    def _select_words(self, input_ids: torch.Tensor, cand: torch.Tensor, k: torch.Tensor,
                      generator: torch.Generator | None) -> torch.Tensor:
        """Whole words in random order while the selected tokens stay within k (at least one word)."""
        bsz, seq = input_ids.shape
        prev = torch.zeros_like(cand)
        prev[:, 1:] = cand[:, :-1]
        start = cand & (~self.continuation[input_ids] | ~prev)  # a '##' token after a special starts a word
        word = start.long().cumsum(1)  # [batch, seq]: word number of each candidate token (1-based)
        u = torch.rand((bsz, seq + 1), generator=generator)  # one random score per word
        score = u.gather(1, word).masked_fill(~cand, 2.0)
        order = score.argsort(dim=1, stable=True)  # tokens of one word stay together: they share a score
        cand_sorted = cand.gather(1, order).long()
        cum = cand_sorted.cumsum(1)  # tokens taken after each position of that order
        # [batch, words]: tokens taken once the word is complete (special/pad tokens carry the word id
        # before them but sort last, so only candidate positions count)
        word_end = torch.zeros((bsz, seq + 1), dtype=torch.long).scatter_reduce(
            1, word.gather(1, order), cum * cand_sorted, "amax")
        chosen = (word_end <= k[:, None])
        first = word.gather(1, order[:, :1])  # the first word in the order, taken even when it alone exceeds k
        chosen.scatter_(1, first, chosen.gather(1, first) | (k[:, None] > 0))
        return cand & chosen.gather(1, word)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        selected = self.select(input_ids, attention_mask, generator)
        u = torch.rand(input_ids.shape, generator=generator)
        to_mask = selected & (u < self.mask_replace)
        to_random = selected & (u >= self.mask_replace) & (u < self.mask_replace + self.random_replace)
        masked = input_ids.masked_fill(to_mask, self.mask_id)
        pick = torch.randint(len(self.allowed), input_ids.shape, generator=generator)
        masked = torch.where(to_random, self.allowed[pick], masked)
        labels = input_ids.masked_fill(~selected, -100)  # [batch, seq]
        return masked, labels


class MLMData:
    """Masks batches of `base` (packed blocks or NSP pairs); `mlm_positions` index the flat [batch*seq] tokens.

    Training batches draw from the global torch RNG (restored when a run resumes); held-out batches
    use a generator seeded by their first index, so every evaluation scores the same masks."""

    def __init__(self, base: Any, masker: Masker, fixed_seed: int | None = None) -> None:
        self.base, self.masker, self.fixed_seed = base, masker, fixed_seed

    def __len__(self) -> int:
        return len(self.base)

    def lengths(self) -> list[int]:
        return self.base.lengths()

    def collate(self, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
        b = self.base.collate(idx, pad_id)
        g = None
        if self.fixed_seed is not None:
            g = torch.Generator().manual_seed(self.fixed_seed * 1_000_003 + int(idx[0]))
        b["input_ids"], labels = self.masker(b["input_ids"], b["attention_mask"], g)
        flat = labels.view(-1)
        b["mlm_positions"] = (flat != -100).nonzero().squeeze(1)  # [n_selected]
        b["labels"] = flat.index_select(0, b["mlm_positions"])  # [n_selected] original tokens
        return b


def mlm_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module | None] | None:
    """(encoder, MLM head over hidden states, NSP head over the pooled output) where the layout is known."""
    cls = getattr(model, "cls", None)
    enc = getattr(model, model.base_model_prefix, None)
    if enc is not None and cls is not None and hasattr(cls, "predictions"):  # BERT: BertForMaskedLM/PreTraining
        return enc, cls.predictions, getattr(cls, "seq_relationship", None)
    if enc is not None and hasattr(model, "lm_head"):  # RoBERTa, XLM-R, ...: lm_head(features)
        return enc, model.lm_head, None
    return None


class MaskedLMWrapper(nn.Module):
    """Encoder once, then the vocabulary projection on the selected positions only."""

    def __init__(self, model: nn.Module, head: nn.ParameterList | None = None) -> None:
        super().__init__()
        if head is not None:
            self.classifier = head  # registered first: the new head gets the head lr (see head_alias)
        self.model = model
        self._parts = mlm_parts(model)  # a tuple: not registered again as submodules

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mlm_positions: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> LMOutput:
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        if self._parts is None:  # unknown layout: full logits, then pick the selected rows
            logits = self.model(**kw).logits  # [batch, seq, vocab]
            return LMOutput(logits.reshape(-1, logits.shape[-1]).index_select(0, mlm_positions))
        enc, head, nsp = self._parts
        out = enc(**kw)
        hidden = out.last_hidden_state  # [batch, seq, hidden]
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, mlm_positions)  # [n_selected, hidden]
        nsp_logits = nsp(out.pooler_output) if nsp is not None and token_type_ids is not None else None  # [batch, 2]
        return LMOutput(head(h), nsp_logits)


class MLM(Objective):
    name = "mlm"
    model_kind = "encoder"
    default_arch = "bert"

    def masker(self, tokenizer: Any, vocab_size: int, cfg: Any) -> Masker:
        return Masker.for_tokenizer(tokenizer, vocab_size, cfg.mlm_probability, cfg.mask_replace,
                                    cfg.random_replace, cfg.whole_word_mask)

    def prepare(self, train_docs: list[str], held_docs: list[str], tokenizer: Any, vocab_size: int,
                cfg: Any) -> tuple[Any, Any]:
        sep = separator_id(tokenizer)
        width = cfg.max_length or self.default_max_length
        masker = self.masker(tokenizer, vocab_size, cfg)
        prefix = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
        out = []
        for docs, seed in ((train_docs, None), (held_docs, cfg.train.seed)):
            if not docs:
                out.append(None)
                continue
            cache = build_cache(docs, tokenizer, "docs", sep)
            # [CLS] + content + [SEP]: documents inside a block are separated by their own [SEP]
            blocks = PackedBlocks(cache, width - len(prefix) - 1, prefix, [sep])
            out.append(MLMData(blocks, masker, seed))
        return out[0], out[1]

    def wrap(self, model: nn.Module, new_params: list[str]) -> nn.Module:
        return MaskedLMWrapper(model, head_alias(model, new_params))


if "mlm" not in OBJECTIVES:  # a module reload must not register twice
    OBJECTIVES.register("mlm", MLM())
