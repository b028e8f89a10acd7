"""SetFit-style few-shot training (Tunstall et al., 2022): contrastive sentence pairs, then the head.

Stage 1 fine-tunes the whole encoder on pairs drawn from the labelled examples: for each example
and each of `setfit_iterations` rounds, one pair with an example of the same label (target 1) and
one with an example of another label (target 0), scored by the cosine similarity of the two pooled
vectors against the target (squared error: SetFit's CosineSimilarityLoss). Even 8 examples per class
give hundreds of distinct pairs, which is why the method works from 2 examples per class up.
Stage 2 freezes the tuned encoder, encodes every split once (the cached-feature path head_only
uses) and trains a linear head on those vectors: the place of SetFit's logistic regression.

Stage 1 runs through the same `Trainer` as every run (its checkpoints in RUN/contrastive/, so an
interrupted run resumes inside either stage); the artefact is a full model folder, loaded,
evaluated, predicted and served like `full`'s.

Written here rather than through the `setfit` library: setfit saves its scikit-learn head with
pickle (model_head.pkl), which this project never loads from a run folder, and trains in a loop of
its own that would bypass this project's checkpoints, resume and early stopping.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..core.registry import METHODS
from .base import Method, OwnStage, is_head_param

logger = logging.getLogger(__name__)

CONTRASTIVE_DIR = "contrastive"


@dataclass
class SetFitOptions:
    setfit_iterations: int = field(default=20, metadata={"help": "pair rounds per example: each adds one same-label and one other-label pair", "search": {"choices": [5, 10, 20, 40]}})
    setfit_max_pairs: int = field(default=3000, metadata={"help": "at most this many pairs in stage 1 (large sets need few rounds)"})
    setfit_lr: float = field(default=5e-5, metadata={"help": "learning rate of the encoder in stage 1 (5e-5 beat 2e-5 by 3 points at 8 movie sentences per class)", "search": {"low": 1e-5, "high": 1e-4, "log": True}})
    setfit_epochs: float = field(default=1.0, metadata={"help": "passes over the pairs in stage 1"})
    setfit_batch_size: int = field(default=16, metadata={"help": "pairs per step in stage 1"})

    def checks(self) -> list[tuple[bool, str, str, Any]]:
        return [
            (not 1 <= self.setfit_iterations <= 1000, "setfit_iterations", "must be in [1, 1000]", self.setfit_iterations),
            (not 2 <= self.setfit_max_pairs <= 10_000_000, "setfit_max_pairs", "must be in [2, 10000000]", self.setfit_max_pairs),
            (not 0 < self.setfit_lr < 1, "setfit_lr", "must be in (0, 1)", self.setfit_lr),
            (not 0 < self.setfit_epochs <= 100, "setfit_epochs", "must be in (0, 100]", self.setfit_epochs),
            (not 1 <= self.setfit_batch_size <= 4096, "setfit_batch_size", "must be in [1, 4096]", self.setfit_batch_size),
        ]


def draw_pairs(labels: Sequence[int], iterations: int, max_pairs: int, seed: int) -> list[tuple[int, int, float]]:
    """(i, j, target) pairs: per round and example, one same-label partner (1.0) and one other-label (0.0).

    An example alone in its class gets no positive pair; a set with one class gets no negatives.
    Shuffled, then cut to `max_pairs`.
    """
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    pairs: list[tuple[int, int, float]] = []
    for _ in range(iterations):
        for i, y in enumerate(labels):
            same = by_label[y]
            if len(same) > 1:
                j = rng.choice(same)
                while j == i:
                    j = rng.choice(same)
                pairs.append((i, j, 1.0))
            others = [k for k in by_label if k != y]
            if others:
                pairs.append((i, rng.choice(by_label[rng.choice(others)]), 0.0))
    rng.shuffle(pairs)
    return pairs[:max_pairs]


class PairData:
    """Pairs of tokenized texts for the Trainer: each row is two texts and a similarity target."""

    def __init__(self, tokens: Any, pairs: list[tuple[int, int, float]]) -> None:
        self.tokens, self.pairs = tokens, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def lengths(self) -> list[int]:
        n = [len(x) for x in self.tokens.ids]
        return [max(n[i], n[j]) for i, j, _ in self.pairs]

    def collate(self, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
        a = self.tokens.collate([self.pairs[k][0] for k in idx], pad_id)
        b = self.tokens.collate([self.pairs[k][1] for k in idx], pad_id)
        return {"input_ids_a": a["input_ids"], "attention_mask_a": a["attention_mask"],
                "input_ids_b": b["input_ids"], "attention_mask_b": b["attention_mask"],
                "labels": torch.tensor([self.pairs[k][2] for k in idx])}


@dataclass
class _Similarity:
    logits: torch.Tensor  # [batch] cosine similarities


class PairModel(nn.Module):
    """The classifier's pooled encoder applied to both texts of a pair: their cosine similarity."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.model = classifier

    def forward(self, input_ids_a: torch.Tensor, attention_mask_a: torch.Tensor, input_ids_b: torch.Tensor,
                attention_mask_b: torch.Tensor, **_: Any) -> _Similarity:
        u = self.model.pool(input_ids_a, attention_mask_a)  # [batch, hidden]
        v = self.model.pool(input_ids_b, attention_mask_b)
        return _Similarity(nn.functional.cosine_similarity(u, v, dim=-1))


def similarity_loss(outputs: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """Summed squared error of the cosine similarity against the 0/1 target; 'correct' = on the right side of 0.5."""
    sim, target = outputs.logits.float(), batch["labels"].float()
    return ((sim - target) ** 2).sum(), int(target.numel()), int(((sim > 0.5) == (target > 0.5)).sum())


@METHODS.register("setfit")
class SetFit(Method):
    name = "setfit"
    decoder_refusal = "it tunes a sentence encoder on pairs of texts with class labels, which generation has none of"
    Options = SetFitOptions
    # stage 2: a linear head on cached features of the tuned encoder, as long and patient as head_only's
    default_lr = 1e-2
    default_epochs = 50
    default_batch_size = 16
    default_patience = 5
    cache_features = True
    needs_pooled_task = True  # pairs of sentence vectors with one class label each: token, regression and multi-label tasks have none
    # plan picks it for few-shot data only (no plan_rank): with many rows it trails LoRA and full (README)
    plan_picks = {"few_shot": "{few} training rows in the smallest class: few-shot; setfit tunes the encoder on "
                              "sentence pairs drawn from them, then the head; at 8 rows per class on two bundled "
                              "benchmarks it matched or beat LoRA and full fine-tuning and varied far less from "
                              "seed to seed (README; LoRA with EDA augmentation did as well)"}

    def apply(self, model: nn.Module) -> nn.Module:
        for n, p in model.named_parameters():  # stage 2's trainable part; stage 1 unfreezes the encoder
            p.requires_grad_(is_head_param(n))
        return model

    def before_training(self, model: nn.Module, data: dict[str, Any], run: Any) -> nn.Module:
        """Stage 1: contrastive pairs tune the encoder (resumed from RUN/contrastive/ when there)."""
        from ..training.loop import Trainer
        o, cfg = self.options, run.cfg.train
        pairs = draw_pairs(data["train"].labels, o.setfit_iterations, o.setfit_max_pairs, cfg.seed)
        if not pairs:
            return model
        for n, p in model.named_parameters():
            p.requires_grad_(not is_head_param(n))
        tcfg = dataclasses.replace(cfg, epochs=o.setfit_epochs, max_steps=None, batch_size=o.setfit_batch_size,
                                   grad_accum=1, lr=o.setfit_lr, head_lr=o.setfit_lr, layer_lr_decay=None,
                                   eval_steps=None, early_stopping_patience=0, metric=None)
        pair_data = PairData(data["train"], pairs)
        trainer = Trainer(PairModel(model), pair_data, tcfg, Path(run.run_dir) / CONTRASTIVE_DIR, run.accelerator,
                          run.pad_id, loss_fn=similarity_loss)
        resumed = run.resume is not None and trainer.load_checkpoint()
        encoder = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info(f"setfit stage 1: {len(pairs):,} sentence pairs from {len(data['train']):,} examples, "
                    f"{trainer.total_steps} steps at lr {o.setfit_lr:g} training the encoder's {encoder:,} parameters"
                    + (f" (resumed at step {trainer.state.global_step})" if resumed else ""))
        trainer.fit()
        self.contrastive = {"pairs": len(pairs), "steps": trainer.state.global_step, "trainable": encoder,
                            "seconds": round(trainer.state.train_seconds, 2)}
        del trainer
        run.accelerator.free_memory()  # stage 1's optimizer state is not needed by stage 2
        self.apply(model)
        return model

    def own_stage(self, class_counts: Sequence[int], batch: int | None = None) -> OwnStage | None:
        """Stage 1 as `plan` sees it: every pair step runs the encoder forward and backward on both of
        its texts, as full fine-tuning does on a batch twice the size. The pair count is draw_pairs':
        each round gives every example of a class with a partner one same-label pair, and every
        example one other-label pair when another class has rows."""
        present = [c for c in class_counts if c > 0]
        per_round = sum(c for c in present if c > 1) + (sum(present) if len(present) > 1 else 0)
        pairs = min(self.options.setfit_iterations * per_round, self.options.setfit_max_pairs)
        if pairs < 1:
            return None
        batch = batch or self.options.setfit_batch_size
        steps = math.ceil(math.ceil(pairs / batch) * self.options.setfit_epochs)  # as the loop counts them
        return OwnStage("full", 2 * batch, steps, f"{pairs:,} sentence pairs", "method.setfit_batch_size", 2)

    def train_record(self) -> dict[str, Any]:
        return {"contrastive": getattr(self, "contrastive", None)}
