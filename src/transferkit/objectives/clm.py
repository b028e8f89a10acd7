"""Causal LM: documents joined with EOS, packed into fixed-length blocks, next-token prediction.

`PackedBlocks` is the packing both CLM and MLM train on: the token stream of the cache (each
document already ends in its separator) is cut into consecutive blocks of `content` tokens, so
there is no padding and no token is lost or repeated; only the last block may be shorter.
The shift to next-token targets happens in `CLMData.collate` (targets are gathered, not stored),
and the model wrapper projects only the positions that have a target onto the vocabulary.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.registry import OBJECTIVES
from ..data.corpus import build_cache
from . import LMOutput, Objective, batches_of, head_alias, perplexity


class PackedBlocks:
    """Consecutive blocks of `content` stream tokens, each wrapped as prefix + block + suffix."""

    def __init__(self, cache: Any, content: int, prefix: Sequence[int] = (), suffix: Sequence[int] = ()) -> None:
        if content < 1:
            raise ValueError("block content must hold at least one token")
        self.cache, self.content = cache, content
        self.prefix, self.suffix = list(prefix), list(suffix)
        self.n = -(-cache.num_tokens // content)  # ceil: the tail becomes a shorter last block

    def __len__(self) -> int:
        return self.n

    def block(self, i: int) -> np.ndarray:
        """Stream tokens of block i (without prefix/suffix)."""
        return self.cache.span(i * self.content, self.content)

    def lengths(self) -> list[int]:
        extra = len(self.prefix) + len(self.suffix)
        full = [self.content + extra] * self.n
        if self.n:
            full[-1] = self.cache.num_tokens - (self.n - 1) * self.content + extra
        return full

    def collate(self, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask [batch, width]; only a batch holding the tail block is padded."""
        rows = [np.concatenate([self.prefix, self.block(i), self.suffix]).astype(np.int64) for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [batch, width]
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            ids[k, :len(r)] = torch.from_numpy(r)
            mask[k, :len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}


class CLMData:
    """Packed blocks with next-token targets: `lm_positions` index the flattened [batch*width] positions."""

    def __init__(self, blocks: PackedBlocks) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def lengths(self) -> list[int]:
        return self.blocks.lengths()

    def collate(self, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
        b = self.blocks.collate(idx, pad_id)
        ids, mask = b["input_ids"], b["attention_mask"]
        has_target = torch.zeros_like(mask, dtype=torch.bool)  # position t predicts token t+1
        has_target[:, :-1] = mask[:, 1:].bool()
        b["lm_positions"] = has_target.view(-1).nonzero().squeeze(1)  # [n_targets]
        b["labels"] = ids[:, 1:][mask[:, 1:].bool()]  # [n_targets], same row-major order
        return b


class CausalLMWrapper(nn.Module):
    """Runs the decoder body once and the LM head only on positions that have a target."""

    def __init__(self, model: nn.Module, head: nn.ParameterList | None = None) -> None:
        super().__init__()
        if head is not None:
            self.classifier = head  # registered first: the new head gets the head lr (see head_alias)
        self.model = model
        out = model.get_output_embeddings()
        self._fast = isinstance(out, nn.Linear) and getattr(model.config, "final_logit_softcapping", None) is None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, lm_positions: torch.Tensor,
                **_: Any) -> LMOutput:
        if self._fast:
            hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, lm_positions)  # [n_targets, hidden]
            return LMOutput(self.model.get_output_embeddings()(h))  # [n_targets, vocab]
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # [batch, width, vocab]
        return LMOutput(logits.reshape(-1, logits.shape[-1]).index_select(0, lm_positions))


def lm_loss(out: LMOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """Summed cross-entropy over scored tokens, their number, and how many the argmax got right."""
    labels = batch["labels"]  # [n]
    loss = nn.functional.cross_entropy(out.logits.float(), labels, reduction="sum")
    return loss, int(labels.numel()), int((out.logits.argmax(-1) == labels).sum())


@torch.no_grad()
def evaluate_lm(wrapped: nn.Module, data: Any, batch_size: int, pad_id: int, device: Any,
                loss_fn: Callable = lm_loss) -> dict[str, float]:
    """Held-out loss, perplexity and token accuracy, summed over every scored token."""
    total, n, correct = 0.0, 0, 0
    for idx in batches_of(len(data), batch_size):
        batch = {k: v.to(device) for k, v in data.collate(idx, pad_id).items()}
        labels = batch.pop("labels")
        loss, items, ok = loss_fn(wrapped(**batch), {**batch, "labels": labels})
        total, n, correct = total + float(loss), n + items, correct + ok
    mean = total / max(n, 1)
    return {"loss": mean, "perplexity": perplexity(mean), "accuracy": correct / max(n, 1), "tokens": n}


def separator_id(tokenizer: Any) -> int:
    """The token that ends each document in the stream: EOS, else SEP."""
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if sep is None:
        from ..core.errors import UserError
        raise UserError(f"tokenizer {type(tokenizer).__name__} has neither an eos nor a sep token to end documents")
    return int(sep)


class CLM(Objective):
    name = "clm"
    model_kind = "decoder"
    default_arch = "gpt2"
    default_batch_size = 16
    lr_continued = 5e-5

    def prepare(self, train_docs: list[str], held_docs: list[str], tokenizer: Any, vocab_size: int,
                cfg: Any) -> tuple[Any, Any]:
        sep = separator_id(tokenizer)
        width = cfg.max_length or self.default_max_length
        out = []
        for docs in (train_docs, held_docs):
            cache = build_cache(docs, tokenizer, "docs", sep) if docs else None
            out.append(CLMData(PackedBlocks(cache, width)) if cache is not None else None)
        return out[0], out[1]

    def wrap(self, model: nn.Module, new_params: list[str]) -> nn.Module:
        return CausalLMWrapper(model, head_alias(model, new_params))


if "clm" not in OBJECTIVES:  # a module reload must not register twice
    OBJECTIVES.register("clm", CLM())
