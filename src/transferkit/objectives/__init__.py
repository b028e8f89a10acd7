"""Pretraining objectives: what is predicted and how it is scored (MLM, CLM, MLM+NSP).

Each objective registers itself in `registry.OBJECTIVES` and gives the pretraining run
(`pretrain.py`) the same five things: its training defaults, the training and held-out data
objects (built from the tokenized corpus cache), a wrapper around the transformers model whose
forward computes only the logits that are scored, the loss for `train.Trainer`, and held-out
metrics. The run never branches on an objective's name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class LMOutput:
    """Logits at the scored positions only: [n_scored, vocab]; NSP logits [batch, 2] when trained."""

    logits: torch.Tensor
    nsp_logits: torch.Tensor | None = None


class Objective:
    """Base class; subclasses register an instance in `registry.OBJECTIVES`."""

    name: ClassVar[str]
    model_kind: ClassVar[str]  # "encoder" (bert) or "decoder" (gpt2, llama): which archs fit
    default_arch: ClassVar[str]
    default_max_length: ClassVar[int] = 128
    default_batch_size: ClassVar[int] = 32
    lr_scratch: ClassVar[float] = 5e-4  # from scratch: small models tolerate (and need) a high lr
    lr_continued: ClassVar[float] = 1e-4  # continued pretraining: do not wreck the pretrained weights
    head_lr_new: ClassVar[float] = 1e-3  # newly initialised head weights of a continued model

    def prepare(self, train_docs: list[str], held_docs: list[str], tokenizer: Any, vocab_size: int,
                cfg: Any) -> tuple[Any, Any]:
        """(training data, held-out data): objects with `lengths()`, `__len__` and `collate(idx, pad_id)`."""
        raise NotImplementedError

    def wrap(self, model: nn.Module, new_params: list[str]) -> nn.Module:
        raise NotImplementedError

    def loss_fn(self, out: LMOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
        """Summed token cross-entropy over the scored positions (MLM and CLM alike)."""
        return lm_loss(out, batch)

    def evaluate(self, wrapped: nn.Module, data: Any, batch_size: int, pad_id: int,
                 device: Any) -> dict[str, float]:
        """Held-out loss, perplexity and token accuracy."""
        return evaluate_lm(wrapped, data, batch_size, pad_id, device)


def head_alias(model: nn.Module, names: list[str]) -> nn.ParameterList | None:
    """The model's newly initialised parameters, to register under `classifier` before the model.

    `optim.param_groups` gives parameters whose name has a `classifier` part the head learning rate;
    registering the new head weights first makes them appear under that name (named_parameters
    reports a shared tensor once, under its first name), so a fresh MLM head can learn faster than
    the pretrained encoder it sits on without a change to the training loop."""
    params = dict(model.named_parameters())
    new = [params[n] for n in sorted(names) if n in params]
    return nn.ParameterList(new) if new else None


def batches_of(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def perplexity(mean_loss: float) -> float:
    return math.exp(min(mean_loss, 50.0))  # capped: a diverged run reports a huge number, not inf


from . import clm, mlm, nsp  # noqa: E402,F401  (register the objectives)
from .clm import evaluate_lm, lm_loss
