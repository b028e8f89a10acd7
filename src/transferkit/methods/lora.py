"""LoRA through peft: low-rank updates on chosen linear layers; the head trains and is saved with it.

Options: `target_modules` (names, dotted suffixes, or `all-linear` for every linear layer of the
encoder but not the head), rsLoRA (`use_rslora`: scale alpha/sqrt(r)), DoRA (`use_dora`), all
peft's; LoRA+ (`lora_plus_ratio`: the B matrices learn at lr * ratio) is an optimizer setting, so
the method only marks the B matrices and `train.param_groups` gives them their learning rate.
"""
from __future__ import annotations

from torch import nn

from ..registry import METHODS
from .base import set_lr_scale
from .layout import model_type
from .peft_common import ALL_LINEAR, PeftMethod, all_linear_regex, check_targets, peft_task_type

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
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
}


def default_targets(model: nn.Module) -> list[str]:
    return DEFAULT_TARGETS.get(model_type(model), ["query", "value"])


@METHODS.register("lora")
class LoRA(PeftMethod):
    name = "lora"
    default_lr = 1e-3
    marker = "lora_"

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
