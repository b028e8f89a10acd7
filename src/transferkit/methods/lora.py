"""LoRA through peft: low-rank updates on chosen linear layers; the head trains and is saved with it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from ..registry import METHODS
from .base import Method

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
    cfg = model.config
    model_type = cfg.encoder.get("model_type") if hasattr(cfg, "encoder") else cfg.model_type
    return DEFAULT_TARGETS.get(model_type, ["query", "value"])


@METHODS.register("lora")
class LoRA(Method):
    name = "lora"
    default_lr = 1e-3
    artifact = "adapter"

    def apply(self, model: nn.Module) -> nn.Module:
        from peft import LoraConfig, TaskType, get_peft_model

        o = self.options
        targets = o.target_modules or default_targets(model)
        # peft matches a target by the module's full name or a dotted suffix ("attention.output.dense").
        names = [n for n, _ in model.named_modules()]
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:
            from ..errors import UserError
            raise UserError(f"method.target_modules: {missing} not found in the model "
                            f"(linear layers include: {', '.join(sorted(_linear_names(model)))})")
        config = LoraConfig(task_type=TaskType.SEQ_CLS, r=o.lora_r, lora_alpha=o.lora_alpha or 2 * o.lora_r,
                            lora_dropout=o.lora_dropout, target_modules=targets)
        return get_peft_model(model, config)

    def save(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(out_dir)  # adapter_config.json + adapter_model.safetensors (head included)

    def load(self, art_dir: Path, build_base: Callable[[], nn.Module]) -> nn.Module:
        from peft import PeftModel
        return PeftModel.from_pretrained(build_base(), art_dir)

    def for_inference(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()


def _linear_names(model: nn.Module) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
