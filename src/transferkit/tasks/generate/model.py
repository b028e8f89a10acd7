"""The causal LM a generation run trains, its loss, and batched generation with it.

The model is transformers' own `AutoModelForCausalLM` (a tuned full run saves a folder that class loads; a
LoRA run a PEFT folder on it). For training, `CausalLM` wraps it (whatever peft did to it) and projects only
the positions that predict a scored token onto the vocabulary: on SmolLM2-135M the 49,152-word projection
costs as much as 8 of its 30 layers per position, and a prompt's positions carry no loss.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from ...core.errors import UserError
from ...core.folders import check_finite, loading
from ...objectives import LMOutput, batches_of


def causal_config(path: str, local_only: bool = False) -> Any:
    """The model config in `path`, when it is a causal LM's; a model of another kind is a one-line error."""
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto as ma
    with loading(path, "model config"):
        config = AutoConfig.from_pretrained(path, local_files_only=local_only)
    mtype = getattr(config, "model_type", "?")
    if mtype not in ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or mtype in ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise UserError(f"{path} is a {mtype} model, not a causal LM: generation runs fine-tune a decoder such as "
                        "smollm2-135m (the default) or a `transferkit pretrain --objective clm` run")
    return config


def load_causal_lm(path: str, random_init: bool = False, local_only: bool = False) -> nn.Module:
    """The causal LM in `path` (float32), checked finite; a model of another kind is a one-line error."""
    from transformers import AutoModelForCausalLM
    config = causal_config(path, local_only)
    with loading(path, "causal LM"):
        if random_init:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True,
                                                         local_files_only=local_only)
    check_finite(model, path)
    return model


def causal_body(model: nn.Module) -> nn.Module:
    """The transformers model under any peft wrapper (its layers carry the adapters in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class CausalLM(nn.Module):
    """Runs the decoder once and its LM head only where a token is scored ([n_targets, vocab] logits)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, lm_positions: torch.Tensor,
                position_ids: torch.Tensor | None = None, **_: Any) -> LMOutput:
        lm = causal_body(self.model)
        # packed blocks: no mask, so transformers reads the restarting position ids as sequence boundaries
        mask = None if position_ids is not None else attention_mask
        hidden = lm.base_model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                               use_cache=False).last_hidden_state  # [batch, width, hidden]
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, lm_positions)  # [n_targets, hidden]
        logits = lm.get_output_embeddings()(h)  # [n_targets, vocab]
        cap = getattr(lm.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return LMOutput(logits)


def lm_loss(out: LMOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """Summed cross-entropy over the scored tokens, their number, and how many the argmax got right."""
    labels = batch["labels"]  # [n_targets]
    loss = nn.functional.cross_entropy(out.logits.float(), labels, reduction="sum")
    return loss, int(labels.numel()), int((out.logits.argmax(-1) == labels).sum())


@torch.no_grad()
def held_out_loss(model: nn.Module, data: Any, batch_size: int, pad_id: int, device: Any) -> dict[str, float]:
    """Mean loss per scored token, its perplexity and token accuracy on `data`."""
    wrapped = model if isinstance(model, CausalLM) else CausalLM(model)
    was_training = wrapped.training
    wrapped.eval()
    total, n, correct = 0.0, 0, 0
    for idx in batches_of(len(data), batch_size):
        batch = {k: v.to(device) for k, v in data.collate(idx, pad_id).items()}
        loss, items, ok = lm_loss(wrapped(**batch), batch)
        total, n, correct = total + float(loss), n + items, correct + ok
    wrapped.train(was_training)
    mean = total / max(n, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "token_accuracy": correct / max(n, 1)}


@torch.no_grad()
def generate_ids(model: nn.Module, prompts: Sequence[list[int]], pad_id: int, eos_id: int, device: Any,
                 batch_size: int = 16, max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int | None = None, **generate_options: Any) -> list[list[int]]:
    """New token ids per prompt (without the closing eos), in input order: prompts sorted by length and
    left-padded per batch, transformers' `generate` with a KV cache (and any further `generate_options`, such
    as the server's `stopping_criteria`)."""
    lm = causal_body(model)
    was_training = lm.training
    lm.eval()
    if seed is not None:
        torch.manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    options = {"do_sample": do_sample, "max_new_tokens": max_new_tokens, "pad_token_id": pad_id,
               "eos_token_id": eos_id, **generate_options}
    if do_sample:
        options.update(temperature=temperature, top_p=top_p)
    else:  # greedy: no sampling settings (transformers warns about unused ones)
        options.update(temperature=None, top_p=None, top_k=None)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)  # [batch, width], padded on the left
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for k, i in enumerate(idx):
            n = len(prompts[i])
            ids[k, width - n:] = torch.tensor(prompts[i])
            mask[k, width - n:] = 1
        new = lm.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **options)[:, width:]
        for k, i in enumerate(idx):
            row = new[k].tolist()
            out[i] = row[:row.index(eos_id)] if eos_id in row else row  # a row without eos ran to the budget
    lm.train(was_training)
    return out
