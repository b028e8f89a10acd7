"""Mixup (Zhang et al., 2018) on pooled sentence representations, inside the training step.

For each training batch a weight lam ~ Beta(alpha, alpha) and a shuffled order of its rows are
drawn; the head reads lam * x + (1 - lam) * x[perm] (x: the pooled vectors, [batch, features])
and the loss is lam * CE(logits, y) + (1 - lam) * CE(logits, y[perm]), which is the cross-entropy
against the mixed label distribution. alpha = 0 draws lam = 1: the un-mixed step. Evaluation and
prediction never mix (the hook acts only while the head is in training mode). Draws come from
torch's global generator, which the run seeds and its checkpoints restore, so a resumed run mixes
as the uninterrupted one would. (Sentence classification only: a token head has no pooled vector.)
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


def head_module(model: nn.Module) -> nn.Module:
    """The task head (`classifier`, or peft's wrapper of it: the outermost module of that name)."""
    for name, module in model.named_modules():
        if name.split(".")[-1] == "classifier":
            return module
    raise ValueError("mixup needs a model with a `classifier` head")


class Mixup:
    """Mixes the head's input while training; `loss(task_loss)` scores against the mixed labels."""

    def __init__(self, model: nn.Module, alpha: float) -> None:
        self.alpha = float(alpha)
        self.lam: float | None = None
        self.perm: torch.Tensor | None = None
        self._hook = head_module(model).register_forward_pre_hook(self._mix)

    def _mix(self, module: nn.Module, args: tuple) -> tuple | None:
        if not module.training or not args:
            return None
        x = args[0]  # [batch, features]
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample()) if self.alpha > 0 else 1.0
        self.lam, self.perm = lam, torch.randperm(x.shape[0]).to(x.device)
        return (lam * x + (1 - lam) * x[self.perm], *args[1:])

    def loss(self, task_loss: Callable) -> Callable:
        def mixed(outputs: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
            lam, perm = self.lam, self.perm
            self.lam = self.perm = None
            loss, items, correct = task_loss(outputs, batch)
            if lam is None or lam == 1.0:
                return loss, items, correct
            other, _, _ = task_loss(outputs, {**batch, "labels": batch["labels"][perm]})
            return lam * loss + (1 - lam) * other, items, correct
        return mixed

    def remove(self) -> None:
        self._hook.remove()
