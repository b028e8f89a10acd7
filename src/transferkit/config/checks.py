"""The checks a run's configuration passes before any data or model is read: each option in range,
finite and of a known value, one line naming the key (`UserError`). `config.py` holds the options."""
from __future__ import annotations

from typing import Any

from ..core.errors import UserError
from ..core.registry import METHODS
from .finetune import RunConfig, TrainConfig
from .pretrain import PretrainConfig
from .trackers import parse as parse_trackers


def _train_checks(t: TrainConfig) -> list[tuple[bool, str, str, Any]]:
    """(bad, key, what, value) for the training options both run kinds share (an unknown or uninstalled tracker in
    train.report_to raises its own one-line error)."""
    parse_trackers(t.report_to)
    return [
        (t.lr is not None and t.lr <= 0, "train.lr", "must be > 0", t.lr),
        (t.head_lr is not None and t.head_lr <= 0, "train.head_lr", "must be > 0", t.head_lr),
        (t.batch_size is not None and t.batch_size <= 0, "train.batch_size", "must be > 0", t.batch_size),
        (t.early_stopping_patience is not None and t.early_stopping_patience < 0, "train.early_stopping_patience",
         "must be >= 0", t.early_stopping_patience),
        (t.grad_accum <= 0, "train.grad_accum", "must be > 0", t.grad_accum),
        (t.epochs is not None and t.epochs <= 0, "train.epochs", "must be > 0", t.epochs),
        (t.epochs is not None and t.epochs > 10_000, "train.epochs", "must be <= 10000", t.epochs),
        (t.max_steps is not None and t.max_steps <= 0, "train.max_steps", "must be > 0", t.max_steps),
        (t.weight_decay < 0, "train.weight_decay", "must be >= 0", t.weight_decay),
        (not 0 <= t.warmup < 1, "train.warmup", "must be in [0, 1)", t.warmup),
        (t.max_grad_norm < 0, "train.max_grad_norm", "must be >= 0", t.max_grad_norm),
        (t.eval_steps is not None and t.eval_steps <= 0, "train.eval_steps", "must be > 0", t.eval_steps),
        (t.checkpoint_steps <= 0, "train.checkpoint_steps", "must be > 0", t.checkpoint_steps),
        (t.layer_lr_decay is not None and not 0 < t.layer_lr_decay <= 1, "train.layer_lr_decay", "must be in (0, 1]",
         t.layer_lr_decay),
        (t.seed < 0 or t.seed >= 2**32, "train.seed", "must be in [0, 2**32)", t.seed),
        (t.min_steps is not None and not 0 <= t.min_steps <= 1_000_000, "train.min_steps", "must be in [0, 1000000]",
         t.min_steps),
        (t.class_weights not in ("none", "balanced"), "train.class_weights", "must be none or balanced", t.class_weights),
        (t.precision not in ("auto", "fp32", "bf16"), "train.precision", "must be auto, fp32 or bf16", t.precision),
        (t.parallel not in ("ddp", "fsdp"), "train.parallel", "must be ddp or fsdp", t.parallel),
    ]


def _raise_first(checks: list[tuple[bool, str, str, Any]]) -> None:
    for bad, key, what, value in checks:
        if bad:
            raise UserError(f"{key} {what}, got {value}")


def validate(cfg: RunConfig) -> None:
    """Hyperparameter sanity checks that do not need data or a model."""
    d = cfg.data
    _raise_first(_train_checks(cfg.train) + [
        (d.data is not None and any(x is not None for x in (d.train, d.validation, d.test)), "data.data",
         "cannot be combined with data.train/validation/test (give one file to split, or the split files)", d.data),
        (not 0 <= cfg.model.classifier_dropout < 1, "model.classifier_dropout", "must be in [0, 1)", cfg.model.classifier_dropout),
        (cfg.model.pool_layers is not None and cfg.model.pool_layers < 1, "model.pool_layers", "must be >= 1",
         cfg.model.pool_layers),
        (not isinstance(d.label_separator, str) or not d.label_separator, "data.label_separator",
         "must be a non-empty string", repr(d.label_separator)),
        (cfg.model.head not in ("auto", "linear", "mlp"), "model.head", "must be auto, linear or mlp", cfg.model.head),
        (cfg.model.init not in ("pretrained", "random"), "model.init", "must be pretrained or random", cfg.model.init),
        (cfg.model.init == "random" and not METHODS.get(cfg.method.name).trains_encoder, "model.init",
         "random needs method full (a frozen random encoder cannot be rebuilt for loading)", cfg.model.init),
        (cfg.model.pooling not in ("auto", "mean", "cls"), "model.pooling", "must be auto, mean or cls", cfg.model.pooling),
        (len(d.split) != 3 or any(f < 0 for f in d.split) or abs(sum(d.split) - 1) > 1e-6,
         "data.split", "must be three non-negative fractions summing to 1", d.split),
        (d.max_length is not None and d.max_length < 8, "data.max_length", "must be >= 8", d.max_length),
        (d.limit is not None and d.limit <= 0, "data.limit", "must be > 0", d.limit),
        (d.storage not in ("auto", "memory", "mapped"), "data.storage", "must be auto, memory or mapped", d.storage),
        (d.template not in ("auto", "chat", "plain"), "data.template", "must be auto, chat or plain", d.template),
    ] + cfg.method.checks())
    from ..augmentation import parse_spec
    parse_spec(d.augment)  # a bad spec fails before any data is read


def validate_pretrain(cfg: PretrainConfig) -> None:
    """Pretraining hyperparameter checks that need no data or model."""
    _raise_first([
        (not cfg.corpus, "corpus", "must name at least one file or a bundled corpus", cfg.corpus),
        (cfg.model is not None and cfg.from_scratch, "model", "cannot be combined with from_scratch", cfg.model),
        (cfg.tokenizer is not None and cfg.train_tokenizer, "tokenizer", "cannot be combined with train_tokenizer",
         cfg.tokenizer),
        (not 100 <= cfg.vocab_size <= 1_000_000, "vocab_size", "must be in [100, 1000000]", cfg.vocab_size),
        (cfg.max_length is not None and not 8 <= cfg.max_length <= 4096, "max_length", "must be in [8, 4096]",
         cfg.max_length),
        (not 0 <= cfg.heldout < 0.5, "heldout", "must be in [0, 0.5)", cfg.heldout),
        (cfg.limit is not None and cfg.limit <= 1, "limit", "must be > 1", cfg.limit),
        (not 0 < cfg.mlm_probability < 1, "mlm_probability", "must be in (0, 1)", cfg.mlm_probability),
        (not 0 <= cfg.mask_replace <= 1, "mask_replace", "must be in [0, 1]", cfg.mask_replace),
        (not 0 <= cfg.random_replace <= 1 - cfg.mask_replace, "random_replace", "must be in [0, 1 - mask_replace]",
         cfg.random_replace),
        (not 0 < cfg.nsp_not_next < 1, "nsp_not_next", "must be in (0, 1)", cfg.nsp_not_next),
    ] + _train_checks(cfg.train))
