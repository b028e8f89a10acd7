"""What the peft-backed methods (lora, ia3) share: target checks, PEFT-folder save/load, merging.

Their artefact is a plain PEFT adapter folder (adapter_config.json + adapter_model.safetensors,
the head saved through `modules_to_save`), so `peft.PeftModel.from_pretrained(base, folder)` loads it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from torch import nn

from ..core.errors import UserError
from .base import Method, is_head_param

ALL_LINEAR = "all-linear"
TARGETS_HELP = "modules the method adapts (default per architecture; all-linear: every linear layer of the encoder)"


def linear_names(model: nn.Module) -> set[str]:
    """Last name parts of every Linear layer outside the head (a causal LM's head: its vocabulary projection)."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and not is_head_param(n) and m is not out}


def check_targets(model: nn.Module, targets: list[str] | str, option: str = "method.target_modules") -> None:
    """A UserError naming the targets that match no module (full names or dotted suffixes, as peft matches)."""
    if isinstance(targets, str):  # a regex, built by us: it must match something
        if not any(re.fullmatch(targets, n) for n, _ in model.named_modules()):
            raise UserError(f"{option}: {targets!r} matches no module of this model")
        return
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise UserError(f"{option}: {missing} not found in the model "
                        f"(linear layers include: {', '.join(sorted(linear_names(model)))})")


def all_linear_regex(model: nn.Module) -> str:
    """A regex (peft full-matches it on module names) for every Linear layer of the encoder, not the head."""
    leaves = sorted(linear_names(model))
    if not leaves:
        raise UserError(f"method.target_modules: {ALL_LINEAR}: the model has no linear layers outside the head")
    prefix = "encoder" if hasattr(model, "encoder") and hasattr(model, "classifier") else ".*"
    return rf"{prefix}\.(?:.*\.)?(?:{'|'.join(map(re.escape, leaves))})"


def peft_task_type(model: nn.Module) -> str:
    """peft's TaskType for the model's head: sentence heads wrap as SEQ_CLS, per-token heads as TOKEN_CLS, a causal
    LM (a model that generates) as CAUSAL_LM."""
    if getattr(model, "can_generate", lambda: False)():
        return "CAUSAL_LM"
    return "TOKEN_CLS" if getattr(model.config, "head_kind", "sequence") == "token" else "SEQ_CLS"


class PeftMethod(Method):
    """A method built by `peft.get_peft_model`; saved and loaded as a PEFT adapter folder."""

    artifact = "adapter"
    artifact_files = ("adapter_config.json", "adapter_model.safetensors")
    can_merge = True
    stock_base = True
    folder_library = "peft"
    shares_base = True
    head_file, head_prefix = "adapter_model.safetensors", "base_model.model.classifier."
    marker = ""  # name part of the parameters peft adds ("lora_", "ia3_l")

    def point_to_base(self, model: nn.Module, base_dir: str) -> None:
        # adapter_config.json's base_model_name_or_path: what PeftConfig -> AutoModel... reads
        for config in model.peft_config.values():
            config.base_model_name_or_path = base_dir

    def save(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(out_dir)  # adapter_config.json + adapter_model.safetensors (head included)

    def load(self, art_dir: Path, build_base: Callable[[], nn.Module]) -> nn.Module:
        from peft import PeftModel
        return PeftModel.from_pretrained(build_base(), art_dir)

    def for_inference(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()  # plain Linear layers again: prediction costs what the base costs

    def merge(self, model: nn.Module) -> None:
        model.merge_adapter()

    def unmerge(self, model: nn.Module) -> None:
        model.unmerge_adapter()

    def method_params(self, model: nn.Module) -> dict[str, int]:
        return {n: p.numel() for n, p in model.named_parameters() if self.marker in n}
