"""(IA)^3 through peft (Liu et al. 2022): learned vectors rescale keys, values and the feed-forward activation.

Default targets per layout are exact regexes: peft's own default for BERT (`output.dense` as a
suffix) also rescales the attention output projection's input, which the paper does not; here the
feed-forward vector scales the input of each layer's second feed-forward projection only.
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
from .base import PEFT_BASE, RowMixer, SharedPart
from .layout import model_type, replace_module
from .peft_common import ALL_LINEAR, TARGETS_HELP, PeftMethod, all_linear_regex, check_targets, peft_task_type

# model_type -> (target regex, feed-forward regex); peft full-matches them against module names.
_BERT = (r".*\.layer\.\d+\.(?:attention\.self\.(?:key|value)|output\.dense)", r".*\.layer\.\d+\.output\.dense")
DEFAULT_TARGETS: dict[str, tuple[str, str]] = {
    "bert": _BERT, "roberta": _BERT, "xlm-roberta": _BERT, "electra": _BERT, "camembert": _BERT,
    "distilbert": (r".*\.layer\.\d+\.(?:attention\.(?:k_lin|v_lin)|ffn\.lin2)", r".*\.layer\.\d+\.ffn\.lin2"),
    "mpnet": (r".*\.layer\.\d+\.(?:attention\.attn\.(?:k|v)|output\.dense)", r".*\.layer\.\d+\.output\.dense"),
    "deberta-v2": (r".*\.layer\.\d+\.(?:attention\.self\.(?:key_proj|value_proj)|output\.dense)",
                   r".*\.layer\.\d+\.output\.dense"),
    # keys and values come out of one fused Wqkv: its vector rescales queries too, which adds nothing a key
    # scale cannot do (q.(l*k) = (l*q).k); the feed-forward vector scales the gated activation into mlp.Wo
    "modernbert": (r".*\.layers\.\d+\.(?:attn\.Wqkv|mlp\.Wo)", r".*\.layers\.\d+\.mlp\.Wo"),
    # decoders: keys, values and the input of the feed-forward down projection, as the paper's T0 runs
    "gpt2": (r".*\.h\.\d+\.(?:attn\.c_attn|mlp\.c_proj)", r".*\.h\.\d+\.mlp\.c_proj"),
}
_LLAMA = (r".*\.layers\.\d+\.(?:self_attn\.(?:k_proj|v_proj)|mlp\.down_proj)", r".*\.layers\.\d+\.mlp\.down_proj")
DEFAULT_TARGETS.update({kind: _LLAMA for kind in ("llama", "mistral", "qwen2", "qwen3")})
# Last name parts of feed-forward output projections: IA3 scales their input, not their output.
FEEDFORWARD_NAMES = ("output.dense", "lin2", "fc2", "down_proj", "c_proj", "wo", "mlp.Wo")


@dataclass
class IA3Options:
    target_modules: list[str] | None = field(default=None, metadata={"help": TARGETS_HELP})

    def checks(self) -> list[tuple[bool, str, str, Any]]:
        return []


@METHODS.register("ia3")
class IA3(PeftMethod):
    name = "ia3"
    Options = IA3Options
    # (IA)^3 has the fewest parameters of all (a vector per adapted layer, initialised to ones); the
    # paper trains at 3e-3, and rescaling vectors near 1 tolerate a large step.
    default_lr = 3e-3
    marker = "ia3_l"
    mixes_per_row = True  # each row rescaled by its own run's vectors (`IA3Rows`)
    plan_rank = 30  # the fewest parameters of the peft methods, a little below LoRA's quality

    def apply(self, model: nn.Module) -> nn.Module:
        from peft import IA3Config, TaskType, get_peft_model

        o = self.options
        if o.target_modules and o.target_modules != [ALL_LINEAR]:
            targets: list[str] | str = o.target_modules
            feedforward: list[str] | str = [t for t in targets if t.endswith(FEEDFORWARD_NAMES)]
        elif o.target_modules == [ALL_LINEAR]:
            targets, feedforward = all_linear_regex(model), []
        elif model_type(model) in DEFAULT_TARGETS:
            targets, feedforward = DEFAULT_TARGETS[model_type(model)]
        else:
            raise UserError(f"ia3: no default targets for model type {model_type(model)}; "
                            "set method.target_modules (e.g. key,value,output.dense)")
        check_targets(model, targets)
        config = IA3Config(task_type=TaskType[peft_task_type(model)], target_modules=targets,
                           feedforward_modules=feedforward)
        return get_peft_model(model, config)

    def attach(self, encoder: nn.Module, tuner: Any, name: str, art_dir: Path) -> SharedPart:
        # peft's IA3 layers have no per-row mode: rows read the plain encoder, rescaled by these
        # vectors through forward hooks (`IA3Rows`), so IA3 rows mix with any others.
        return SharedPart(tuner, PEFT_BASE, update=_ia3_vectors(encoder, art_dir))

    @classmethod
    def row_mixer(cls, parts: dict[str, SharedPart]) -> RowMixer | None:
        return IA3Rows(parts)

    def for_inference(self, model: nn.Module) -> nn.Module:
        # peft 0.21's IA3 merge_and_unload fails on a multi-layer head in modules_to_save ("'Sequential'
        # object has no attribute 'weight'"), so merge through peft and unwrap the modules here.
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils import ModulesToSaveWrapper

        model.merge_adapter()
        base = model.get_base_model()
        adapter = model.active_adapter
        for name, module in list(base.named_modules()):
            if isinstance(module, BaseTunerLayer):
                replace_module(base, name, module.get_base_layer())
            elif isinstance(module, ModulesToSaveWrapper):
                replace_module(base, name, module.modules_to_save[adapter])
        return base


class IA3Rows(RowMixer):
    """IA3 runs on a shared encoder: each row's activations rescaled by its own run's vectors, through a
    forward hook on every module some run in the batch rescales (rows of other runs: by ones)."""

    def __init__(self, parts: dict[str, SharedPart]) -> None:
        super().__init__()
        # run -> [(encoder module path, buffer holding its vector, scales the input rather than the output)]
        self.vectors: dict[str, list[tuple[str, str, bool]]] = {}
        for run, part in parts.items():
            for path, (feedforward, vec) in part.update.items():
                key = f"ia3_{sum(map(len, self.vectors.values()))}"
                self.register_buffer(key, vec, persistent=False)
                self.vectors.setdefault(run, []).append((path, key, feedforward))

    @contextmanager
    def mixed_batch(self, encoder: nn.Module, runs: Sequence[str]) -> Iterator[None]:
        scales: dict[str, list[tuple[list[int], torch.Tensor, bool]]] = {}
        for run in dict.fromkeys(runs):
            rows = [i for i, x in enumerate(runs) if x == run]
            for path, key, feedforward in self.vectors.get(run, ()):
                scales.setdefault(path, []).append((rows, getattr(self, key), feedforward))
        handles = []
        for path, entries in scales.items():
            feedforward = entries[0][2]
            scale = torch.ones(len(runs), 1, entries[0][1].numel(), device=entries[0][1].device)  # [batch, 1, features]
            for rows, vec, _ in entries:
                scale[rows] = vec
            module = encoder.get_submodule(path)
            if feedforward:  # scales the layer's input, as peft's feed-forward IA3 layers do
                handles.append(module.register_forward_pre_hook(lambda m, args, s=scale: (args[0] * s, *args[1:])))
            else:  # scales the layer's output (bias included), as peft's IA3 layers do
                handles.append(module.register_forward_hook(lambda m, args, out, s=scale: out * s))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _ia3_vectors(encoder: nn.Module, art_dir: Path) -> dict[str, tuple[bool, torch.Tensor]]:
    """An IA3 run's vectors by encoder module path: [out, 1] scales the output, [1, in] the input."""
    from safetensors.torch import load_file
    prefix, suffix = "base_model.model.encoder.", ".ia3_l"
    out = {}
    for k, v in load_file(str(art_dir / "adapter_model.safetensors")).items():
        if not (k.startswith(prefix) and k.endswith(suffix)):
            continue
        path = k[len(prefix):-len(suffix)]
        try:
            module = encoder.get_submodule(path)
        except AttributeError:
            raise UserError(f"{art_dir}: IA3 vector for {path}, which the base encoder does not have") from None
        base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
        if tuple(v.shape) == (1, base.in_features):
            out[path] = (True, v.flatten())
        elif tuple(v.shape) == (base.out_features, 1):
            out[path] = (False, v.flatten())
        else:
            raise UserError(f"{art_dir}: IA3 vector for {path} has shape {tuple(v.shape)}, which fits neither "
                            f"its input ({base.in_features}) nor its output ({base.out_features})")
    if not out:
        raise UserError(f"{art_dir}: no IA3 vectors in adapter_model.safetensors")
    return out
