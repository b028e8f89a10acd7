"""LoRA through peft: low-rank updates on chosen linear layers; the head trains and is saved with it.

Options: `target_modules` (names, dotted suffixes, or `all-linear` for every linear layer of the
encoder but not the head), rsLoRA (`use_rslora`: scale alpha/sqrt(r)), DoRA (`use_dora`), all
peft's; LoRA+ (`lora_plus_ratio`: the B matrices learn at lr * ratio) is an optimizer setting, so
the method only marks the B matrices and `optim.param_groups` gives them their learning rate.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from ..core.registry import METHODS
from .base import PEFT_BASE, RowMixer, SharedPart, set_lr_scale
from .layout import model_type
from .peft_common import ALL_LINEAR, TARGETS_HELP, PeftMethod, all_linear_regex, check_targets, peft_task_type

# Linear layers LoRA adapts by default, per encoder architecture (model_type).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "deberta-v2": ["query_proj", "value_proj"],
    "distilbert": ["q_lin", "v_lin"],
    "albert": ["query", "value"],
    "mpnet": ["q", "v"],
    "camembert": ["query", "value"],
    "modernbert": ["Wqkv"],  # queries, keys and values in one fused projection
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
}


def default_targets(model: nn.Module) -> list[str]:
    return DEFAULT_TARGETS.get(model_type(model), ["query", "value"])


@dataclass
class LoRAOptions:
    lora_r: int = field(default=8, metadata={"help": "LoRA rank", "search": {"choices": [4, 8, 16, 32]}})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default 2*r)", "search": {"choices": [8, 16, 32, 64]}})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout", "search": {"low": 0.0, "high": 0.3}})
    target_modules: list[str] | None = field(default=None, metadata={"help": TARGETS_HELP, "search": {"choices": [None, "all-linear"]}})
    use_rslora: bool = field(default=False, metadata={"help": "rank-stabilised LoRA: scale alpha/sqrt(r) instead of alpha/r"})
    use_dora: bool = field(default=False, metadata={"help": "DoRA: weight-decomposed LoRA (magnitude + direction)"})
    lora_plus_ratio: float | None = field(default=None, metadata={"help": "LoRA+: the B matrices learn at lr * ratio (the LoRA+ paper suggests 16)"})

    def checks(self) -> list[tuple[bool, str, str, Any]]:
        return [(self.lora_r <= 0, "lora_r", "must be > 0", self.lora_r),
                (self.lora_alpha is not None and self.lora_alpha <= 0, "lora_alpha", "must be > 0", self.lora_alpha),
                (not 0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)", self.lora_dropout),
                (self.lora_plus_ratio is not None and self.lora_plus_ratio <= 0, "lora_plus_ratio", "must be > 0",
                 self.lora_plus_ratio)]


@METHODS.register("lora")
class LoRA(PeftMethod):
    name = "lora"
    Options = LoRAOptions
    default_lr = 1e-3
    marker = "lora_"
    mixes_per_row = True  # peft's per-row adapter_names, or the stacked updates of `LoRARows`
    plan_rank = 10  # plan's first choice when no rule of thumb names another
    plan_picks = {
        "small": "{rows} training rows: few enough that full fine-tuning overfits easily; LoRA trains {trainable:,} "
                 "parameters and keeps the pretrained weights; augmenting the training data helps most at this size",
        "ranked": "{rows:,} training rows: LoRA is within a point of full fine-tuning at this size on the bundled "
                  "benchmarks, trains faster and saves {artefact}",
    }

    def apply(self, model: nn.Module) -> nn.Module:
        from peft import LoraConfig, TaskType, get_peft_model

        o = self.options
        targets: list[str] | str = o.target_modules or default_targets(model)
        if targets == [ALL_LINEAR]:
            targets = all_linear_regex(model)
        check_targets(model, targets)
        config = LoraConfig(task_type=TaskType[peft_task_type(model)], r=o.lora_r,
                            lora_alpha=o.lora_alpha or 2 * o.lora_r,
                            lora_dropout=o.lora_dropout, target_modules=targets, use_rslora=o.use_rslora,
                            use_dora=o.use_dora)
        peft_model = get_peft_model(model, config)
        if o.lora_plus_ratio:
            set_lr_scale(peft_model, {"lora_B": o.lora_plus_ratio})
        return peft_model

    def attach(self, encoder: nn.Module, tuner: Any, name: str, art_dir: Path) -> SharedPart:
        # Its own named peft adapter in the shared encoder; DoRA has no per-row (mixed-batch) mode in peft.
        tuner = _add_lora(tuner, encoder, name, art_dir)
        return SharedPart(tuner, name, mixable=not tuner.peft_config[name].use_dora)

    @classmethod
    def row_mixer(cls, parts: dict[str, SharedPart]) -> RowMixer | None:
        return LoRARows(parts)


class LoRARows(RowMixer):
    """LoRA runs on a shared encoder, each its own peft adapter: a batch of one adapter's rows switches
    to it; a mixed batch gives each row its own adapter's update (stacked, or through peft's loop)."""

    def __init__(self, parts: dict[str, SharedPart]) -> None:
        super().__init__()
        self.tuner = next(iter(parts.values())).tuner  # every LoRA run's adapter is in this one tuner
        self.adapters = {run: p.adapter for run, p in parts.items()}  # run -> its peft adapter
        self.mixable = sorted({p.adapter for p in parts.values() if p.mixable})
        self._stack: Any = None  # the stacked LoRA weights (`_stacks`), built on the first mixed batch

    @contextmanager
    def mixed_batch(self, encoder: nn.Module, runs: Sequence[str]) -> Iterator[None]:
        """Route each row through its adapter: one active adapter, none, or a per-row mix."""
        names = [self.adapters.get(r, PEFT_BASE) for r in runs]  # other methods' rows: the plain encoder
        uniq = set(names)
        if uniq == {PEFT_BASE}:
            self.tuner.disable_adapter_layers()
            try:
                yield
            finally:
                self.tuner.enable_adapter_layers()
        elif len(uniq) == 1:
            self.tuner.set_adapter(names[0], inference_mode=True)
            yield
        elif self._stacks(encoder) is not None:  # every LoRA update of the batch in two batched matmuls per layer
            with self._stacked_lora(names):
                yield
        else:  # the mechanism PeftModel.forward(adapter_names=...) uses
            with self.tuner._enable_peft_forward_hooks(adapter_names=names):
                yield

    def _stacks(self, encoder: nn.Module) -> Any:
        """Per LoRA layer, every mixable adapter's A and B stacked (rank padded with zeros, scaling folded
        into B, slot 0 all zeros for rows without one): (adapter -> slot, [(layer, A [n+1, r, in], B [n+1, out, r])]).
        None when some layer is not a plain LoRA Linear (peft's own per-row loop serves those).

        peft's mixed batch (`adapter_names`) loops over the adapters in every layer: index the rows,
        two small matmuls, scatter back; 8 adapters cost 8 of each per layer. Gathering each row's A and
        B and running `bmm` twice costs the same for any number of adapters (the BGMV kernel of
        punica and S-LoRA, here in plain torch)."""
        if self._stack is not None:
            return self._stack or None
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.lora import LoraLayer
        order = self.mixable
        slot = {a: i + 1 for i, a in enumerate(order)}
        layers = []
        for m in encoder.modules():
            if not isinstance(m, LoraLayer):
                continue
            here = [a for a in order if a in m.lora_A]
            if not here:
                continue
            if not isinstance(m, LoraLinear) or any(m.lora_B[a].bias is not None or a in m.lora_variant for a in here):
                self._stack = ()  # checked once: this model takes peft's path
                return None
            ref = m.lora_A[here[0]].weight
            r = max(m.lora_A[a].weight.shape[0] for a in here)
            A = ref.new_zeros(len(order) + 1, r, ref.shape[1])  # [slots, r, in]
            B = ref.new_zeros(len(order) + 1, m.lora_B[here[0]].weight.shape[0], r)  # [slots, out, r]
            with torch.no_grad():
                for a in here:
                    ra = m.lora_A[a].weight.shape[0]
                    A[slot[a], :ra] = m.lora_A[a].weight
                    B[slot[a], :, :ra] = m.lora_B[a].weight * m.scaling[a]
            layers.append((m, A, B))
        self._stack = (slot, layers)
        return self._stack

    @contextmanager
    def _stacked_lora(self, names: list[str]) -> Iterator[None]:
        """peft's layers compute the base alone; a hook on each adds every row's own LoRA update."""
        slot, layers = self._stack
        idx = torch.tensor([slot.get(n, 0) for n in names], device=layers[0][1].device if layers else None)

        def add(A: torch.Tensor, B: torch.Tensor) -> Any:
            a_rows, b_rows = A[idx].transpose(1, 2), B[idx].transpose(1, 2)  # [batch, in, r], [batch, r, out]

            def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
                x = args[0].to(A.dtype)
                x3 = x if x.dim() == 3 else x.unsqueeze(1)  # [batch, seq, in]
                delta = torch.bmm(torch.bmm(x3, a_rows), b_rows)  # [batch, seq, out]
                return out + (delta if x.dim() == 3 else delta.squeeze(1)).to(out.dtype)
            return hook
        handles = [m.register_forward_hook(add(A, B)) for m, A, B in layers]
        self.tuner.disable_adapter_layers()
        try:
            yield
        finally:
            self.tuner.enable_adapter_layers()
            for h in handles:
                h.remove()


class _Holder(nn.Module):
    """Puts the encoder at the path it has inside the classifier ("encoder.<...>"), so the run's
    target_modules (names, suffixes or regexes written against the classifier) match the same layers."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder


def _add_lora(tuner: Any, encoder: nn.Module, name: str, art_dir: Path) -> Any:
    """Inject the run's LoRA layers into the encoder as adapter `name` and load their weights."""
    from peft import LoraConfig, LoraModel, set_peft_model_state_dict
    from safetensors.torch import load_file
    cfg = LoraConfig.from_pretrained(str(art_dir))
    cfg.modules_to_save, cfg.task_type, cfg.inference_mode = None, None, True  # the head stays outside peft
    if tuner is None:
        tuner = LoraModel(_Holder(encoder), cfg, name)
    else:
        tuner.peft_config[name] = cfg
        tuner.inject_adapter(tuner.model, name)
    # Saved keys are relative to PeftModel(classifier): "base_model.model.encoder.<encoder path>";
    # the tuner's own names are "model.encoder.<encoder path>".
    prefix = "base_model.model."
    saved = load_file(str(art_dir / "adapter_model.safetensors"))
    weights = {"model." + k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix + "encoder.")}
    result = set_peft_model_state_dict(tuner, weights, adapter_name=name)
    wanted = {n for n, _ in tuner.named_parameters() if f".{name}." in n and "lora_" in n}
    missing = wanted & set(result.missing_keys)
    if result.unexpected_keys or missing or not weights:
        raise UserError(f"{art_dir}: LoRA weights do not match the base encoder "
                        f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected)")
    return tuner
