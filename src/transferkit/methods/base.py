"""What an adaptation method is: which parameters train, at what learning rate, and how it is saved.

The training loop only talks to this interface; it never branches on a method's name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, ContextManager, Sequence

import torch
from torch import nn

from ..core.folders import read_json_object
from ..modeling.classifier import MODEL_TYPE, load_saved

HEAD_NAMES = ("classifier",)
PEFT_BASE = "__base__"  # peft's adapter name for "no adapter" in a mixed batch
# Attribute a method sets on the model it returns to ask for per-parameter lr multipliers
# (e.g. LoRA+: B matrices at lr * ratio); `optim.param_groups` reads it. A dict: name part -> factor.
LR_SCALE_ATTR = "transferkit_lr_scale"


def set_lr_scale(model: nn.Module, scales: dict[str, float]) -> None:
    """Parameters whose dotted name contains a key of `scales` train at lr * that factor."""
    object.__setattr__(model, LR_SCALE_ATTR, dict(scales))


def lr_scale(model: nn.Module, name: str) -> float:
    """The lr multiplier the method asked for on parameter `name` (1.0 when none)."""
    factor = 1.0
    for part, f in (getattr(model, LR_SCALE_ATTR, None) or {}).items():
        if part in name.split("."):
            factor *= f
    return factor


def is_head_param(name: str) -> bool:
    """True for parameters of the task head (plain or inside peft's modules_to_save wrapper)."""
    return any(part in HEAD_NAMES for part in name.split("."))


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable, total and head-trainable parameter counts."""
    total = trainable = head = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            if is_head_param(name):
                head += p.numel()
    return {"trainable": trainable, "total": total, "head": head}


def describe_parameters(counts: dict[str, int]) -> str:
    """peft's `print_trainable_parameters` line, plus how many of the trainable ones are the head."""
    share = 100 * counts["trainable"] / max(counts["total"], 1)
    return (f"trainable params: {counts['trainable']:,} || all params: {counts['total']:,} || "
            f"trainable%: {share:.4f} (head: {counts['head']:,})")


@dataclass
class SharedPart:
    """What one run adds to a base encoder it shares with other runs (`Method.attach`)."""

    tuner: Any  # the peft tuner holding the LoRA adapters injected so far (None while there is none)
    adapter: str  # the peft adapter name its rows use in a mixed batch (PEFT_BASE: the plain encoder)
    # can share one encoder pass with other runs' rows (when its method `mixes_per_row`; DoRA cannot)
    mixable: bool = True
    # what the method's `row_mixer` applies to this run's rows (IA3: its vectors, BitFit: its bias differences)
    update: Any = None


class RowMixer(nn.Module):
    """One method's per-row update on a shared encoder (what peft's `_mixed_batch_forward` is to a LoRA
    layer). `Method.row_mixer` makes it from that method's runs; it keeps their tensors (as buffers, so
    `.to(device)` moves them) and, around one encoder pass, gives each row its own run's update."""

    def mixed_batch(self, encoder: nn.Module, runs: Sequence[str]) -> ContextManager[None]:
        """Around one pass of `encoder` whose row i belongs to run `runs[i]`; rows of runs this mixer
        does not hold (other methods') get nothing from it."""
        raise NotImplementedError


@dataclass(frozen=True)
class OwnStage:
    """A training stage of the method's own before the main one (`Method.own_stage`), as `plan` models it:
    each of `steps` steps trains like method `like` on `batch_size` texts. `batch_option` is the method
    option that sets its batch (in its own units: `batch_size / texts_per_item` items a step)."""

    like: str
    batch_size: int
    steps: int
    what: str  # what it trains on, in words: "640 sentence pairs"
    batch_option: str
    texts_per_item: int = 1


@dataclass
class NoOptions:
    """The options of a method that has none of its own."""

    def checks(self) -> list[tuple[bool, str, str, Any]]:
        """(is bad, option, what it must be, value) for each rule; the config reports the first bad one."""
        return []


class Method:
    """Base class; subclasses register themselves in `registry.METHODS`."""

    name: ClassVar[str]
    # The method's own options: a dataclass with defaults, `help` metadata and `checks()`. The run
    # config's `method` section holds one instance; `transferkit params` flags are made from them.
    Options: ClassVar[type] = NoOptions
    default_lr: ClassVar[float]
    default_head_lr: ClassVar[float | None] = None  # None: same as lr
    default_epochs: ClassVar[float] = 3
    default_batch_size: ClassVar[int] = 16
    default_patience: ClassVar[int] = 2  # evaluations without improvement before early stopping
    default_head: ClassVar[str] = "linear"  # linear | mlp
    default_pool_layers: ClassVar[int] = 1  # encoder layers the head reads (mean-pooled, concatenated)
    # True when the encoder is frozen, so pooled features can be computed once and cached.
    cache_features: ClassVar[bool] = False
    # Folder name inside the run directory: "model" (full HF folder) or "adapter" (PEFT folder).
    artifact: ClassVar[str] = "model"
    # Files the artefact folder must hold ('|' separates alternatives); checked before loading.
    artifact_files: ClassVar[tuple[str, ...]] = ("config.json", "model.safetensors")
    # The library that loads the artefact folder with its own stock calls, as a model card's `library_name` says:
    # "transformers" (an AutoModelFor... folder), "peft" (an adapter over its base) or "transferkit" (a format
    # of transferkit's own, which only transferkit loads).
    folder_library: ClassVar[str] = "transformers"
    # True when the method's update folds into the base weights (merge/unmerge below work).
    can_merge: ClassVar[bool] = False
    # True when runs of this method can share one base encoder with other runs (`attach` below).
    shares_base: ClassVar[bool] = False
    # True when rows of its runs can go through one pass of a shared encoder with rows of other runs, each
    # row getting its own run's update (`row_mixer` below; peft's `is_mixed_compatible`). A run may still
    # opt out (`SharedPart.mixable`: DoRA); its rows then run apart, group by group.
    mixes_per_row: ClassVar[bool] = False
    # The artefact file holding the task head's tensors, and their key prefix there.
    head_file: ClassVar[str] = "model.safetensors"
    head_prefix: ClassVar[str] = "classifier."
    # True when the artefact is an adapter that stock library calls load on a base model: the run then
    # also writes `base/` (see `modeling.write_base`) and `point_to_base` records where it is.
    stock_base: ClassVar[bool] = False
    # True when the method needs one pooled vector per example (setfit's sentence pairs): token tasks refuse it.
    needs_pooled_task: ClassVar[bool] = False
    # True when the main training updates every encoder weight (full fine-tuning): the only method a
    # randomly initialised encoder suits (the others rebuild a pretrained base when loading), the one
    # whose search space holds layer-wise lr decay, and the reference plan and compare measure others by.
    trains_encoder: ClassVar[bool] = False
    # plan's order of preference among the methods that fit, lower first (None: plan never picks the
    # method by rank, only by a rule of `plan_picks`).
    plan_rank: ClassVar[int | None] = None
    # plan's rules of thumb that pick this method (recipes/plan_advice): data regime -> the reason plan
    # gives, a str.format template (fields: name, rows, few = training rows of the smallest class,
    # trainable = its trainable parameters, artefact = one artefact's size in words). Regimes:
    # "few_shot" (the smallest class has at most plan_advice.FEW_SHOT rows), "small" (fewer than
    # SMALL_DATA rows), "large" (at least LARGE_DATA rows), "ranked" (picked by `plan_rank`; default
    # "{name} fits and finishes in time").
    plan_picks: ClassVar[dict[str, str]] = {}

    # Why the method cannot adapt a causal LM (a task whose `model_kind` is "decoder"), in words; None: it can.
    decoder_refusal: ClassVar[str | None] = None

    @classmethod
    def refuses(cls, task: Any) -> str | None:
        """Why the method cannot train `task` (a tasks.Task), in a sentence; None when it can. setfit's pairs need
        a pooled vector and one class label per example; some methods need an encoder with a head."""
        if task.model_kind == "decoder" and cls.decoder_refusal:
            return f"method {cls.name} does not apply to a {task.name} run's causal LM: {cls.decoder_refusal}"
        if cls.needs_pooled_task and not (task.pooled_features and task.one_label_per_example):
            return (f"method {cls.name} trains on pairs of sentence vectors with one class label each; a {task.name} "
                    "run has no such labels (choose another method)")
        return None

    @classmethod
    def suits(cls, task: Any) -> bool:
        """Whether the method can train `task` (`refuses` gives the reason when not)."""
        return cls.refuses(task) is None

    def __init__(self, options: Any = None) -> None:
        """`options`: this method's Options, or a config `MethodConfig` (its options are taken)."""
        options = getattr(options, "options", options)  # a MethodConfig holds them
        self.options = self.Options() if options is None else options
        if not isinstance(self.options, self.Options):
            raise TypeError(f"{self.name} takes {self.Options.__name__}, got {type(self.options).__name__}")

    def attach(self, encoder: nn.Module, tuner: Any, name: str, art_dir: Path) -> SharedPart:
        """Add this run's update (saved in `art_dir`) to an encoder other runs share, as `name`
        (only when `shares_base`; `multi_adapter` calls it)."""
        raise NotImplementedError(f"{self.name} runs cannot share a base encoder")

    @classmethod
    def row_mixer(cls, parts: dict[str, SharedPart]) -> RowMixer | None:
        """What gives each row of a shared-encoder batch its own run's update, for this method's runs
        `parts` (run name -> what `attach` returned); None when its rows read the shared encoder as it is."""
        return None

    def point_to_base(self, model: nn.Module, base_dir: str) -> None:
        """Record `base_dir` in the artefact about to be saved (only when `stock_base`)."""

    def train_config(self, cfg: Any, task: Any = None) -> Any:
        """`cfg` (a TrainConfig) with every unset hyperparameter filled from the task's defaults for this method
        (`Task.train_defaults`, where the task has measured its own) or else this method's."""
        own = task.train_defaults.get(self.name, {}) if task is not None else {}
        lr = cfg.lr or own.get("lr") or self.default_lr
        return dataclasses.replace(
            cfg, lr=lr,
            head_lr=cfg.head_lr or own.get("head_lr") or self.default_head_lr or cfg.lr or lr,
            # max_steps alone means exactly that many steps; with epochs, whichever ends first
            epochs=cfg.epochs or (None if cfg.max_steps else own.get("epochs") or self.default_epochs),
            batch_size=cfg.batch_size or self.default_batch_size,
            early_stopping_patience=(self.default_patience if cfg.early_stopping_patience is None
                                     else cfg.early_stopping_patience))

    def apply(self, model: nn.Module) -> nn.Module:
        """Freeze/wrap `model` so exactly the method's parameters train; returns the model to train."""
        raise NotImplementedError

    def before_training(self, model: nn.Module, data: dict[str, Any], run: Any) -> nn.Module:
        """A stage of the method's own before the main training (setfit: contrastive pairs), given the
        encoded splits and the run (its config, directory, accelerator); returns the model to train."""
        return model

    def own_stage(self, class_counts: Sequence[int], batch: int | None = None) -> OwnStage | None:
        """What `before_training` will train on training rows of these class sizes, for `plan` (None: the
        method has no stage of its own); `batch` replaces the stage's own batch option (plan halves it
        when the stage does not fit)."""
        return None

    def train_record(self) -> dict[str, Any]:
        """What the method adds to metrics.json's `train` record (e.g. its own stage's steps and time)."""
        return {}

    def save(self, model: nn.Module, out_dir: Path) -> None:
        """Write the trained artefact (a HF model folder by default)."""
        model.save_pretrained(out_dir)

    def load(self, art_dir: Path, build_base: Callable[[], nn.Module]) -> nn.Module:
        """Re-create the trained model from its artefact (`build_base` makes the untrained base): a transferkit
        classifier folder, or a plain causal LM folder (a full generation run's, loaded with AutoModelForCausalLM)."""
        if read_json_object(Path(art_dir) / "config.json", "model config").get("model_type") != MODEL_TYPE:
            from transformers import AutoModelForCausalLM  # heavy: only for a generation run
            return AutoModelForCausalLM.from_pretrained(art_dir, dtype=torch.float32, use_safetensors=True)
        # The class is ours, so the folder's modeling_transferkit.py (for trust_remote_code users) is never run.
        return load_saved(art_dir, use_safetensors=True)

    def for_inference(self, model: nn.Module) -> nn.Module:
        """The fastest equivalent model for prediction (e.g. LoRA merged into the weights)."""
        return model

    def merge(self, model: nn.Module) -> None:
        """Fold the method's update into the base weights in place (only when `can_merge`)."""
        raise NotImplementedError(f"{self.name} cannot merge into the base weights")

    def unmerge(self, model: nn.Module) -> None:
        """Undo `merge`: the base weights return to their pretrained values."""
        raise NotImplementedError(f"{self.name} cannot merge into the base weights")

    def method_params(self, model: nn.Module) -> dict[str, int]:
        """Parameters the method adds or selects (not the head): name -> numel. Empty for full/head_only."""
        return {}
