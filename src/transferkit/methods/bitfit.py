"""BitFit (Ben Zaken et al. 2022): only the encoder's bias terms and the head train.

peft has no BitFit, and none is needed: it is a choice of `requires_grad`. Every parameter named
`bias` in the encoder trains (the attention, feed-forward and LayerNorm biases, as in the paper's
code); the artefact is those tensors plus the head (`method.json` + `trainable.safetensors`).

A BitFit run shares a base encoder with other runs exactly: a module's output with the trained bias
is its output with the base bias plus (trained - base), for a Linear and a LayerNorm alike, so each
row adds its own run's bias differences (`BitFitRows`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from ..core.registry import METHODS
from .artifact import WEIGHTS_FILE, TensorArtifactMethod
from .base import PEFT_BASE, RowMixer, SharedPart, is_head_param
from .layout import model_type


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "bias"


@METHODS.register("bitfit")
class BitFit(TensorArtifactMethod):
    name = "bitfit"
    # Biases are ~0.1% of the weights and start at their pretrained values, so they need a large step.
    # On MiniLM, first 4,000 movie sentences, one epoch: 3e-3 reached 82.8% validation / 79.9% test
    # against 80.7% / 77.5% at 1e-3.
    default_lr = 3e-3
    shares_base = True  # the weights are the base's; rows add their own bias differences
    mixes_per_row = True
    plan_rank = 50
    head_file = WEIGHTS_FILE

    def apply(self, model: nn.Module) -> nn.Module:
        for n, p in model.named_parameters():
            p.requires_grad_(_is_bias(n) or is_head_param(n))
        if not any(p.requires_grad for n, p in model.named_parameters() if not is_head_param(n)):
            kind = model_type(model)
            if any(is_head_param(n) for n, _ in model.named_parameters()):  # an encoder with a task head
                raise UserError(f"bitfit: this {kind} encoder has no bias terms (ModernBERT builds its linear and "
                                "norm layers without them), so BitFit would train the head alone; use head_only for "
                                "that, or ia3 for an update as small, or lora")
            raise UserError(f"bitfit: this {kind} model has no bias terms and no new head, so BitFit has nothing to "
                            "train (Llama-style decoders such as SmolLM2 drop every bias); use ia3 for an update "
                            "as small, or lora")
        return model

    def method_params(self, model: nn.Module) -> dict[str, int]:
        return {n: p.numel() for n, p in model.named_parameters() if _is_bias(n) and not is_head_param(n)}

    def attach(self, encoder: nn.Module, tuner: Any, name: str, art_dir: Path) -> SharedPart:
        return SharedPart(tuner, PEFT_BASE, update=_bias_offsets(encoder, art_dir))

    @classmethod
    def row_mixer(cls, parts: dict[str, SharedPart]) -> RowMixer | None:
        return BitFitRows(parts)


class BitFitRows(RowMixer):
    """BitFit runs on a shared encoder: each row's module outputs shifted by its own run's bias differences,
    through a forward hook on every module some run in the batch changes (rows of other runs: by zeros)."""

    def __init__(self, parts: dict[str, SharedPart]) -> None:
        super().__init__()
        self.offsets: dict[str, list[tuple[str, str]]] = {}  # run -> [(encoder module path, buffer name)]
        for run, part in parts.items():
            for path, vec in part.update.items():
                key = f"bias_{sum(map(len, self.offsets.values()))}"
                self.register_buffer(key, vec, persistent=False)
                self.offsets.setdefault(run, []).append((path, key))

    @contextmanager
    def mixed_batch(self, encoder: nn.Module, runs: Sequence[str]) -> Iterator[None]:
        offsets: dict[str, list[tuple[list[int], torch.Tensor]]] = {}
        for run in dict.fromkeys(runs):
            rows = [i for i, x in enumerate(runs) if x == run]
            for path, key in self.offsets.get(run, ()):
                offsets.setdefault(path, []).append((rows, getattr(self, key)))
        handles = []
        for path, entries in offsets.items():
            shift = torch.zeros(len(runs), entries[0][1].numel(), device=entries[0][1].device)  # [batch, features]
            for rows, vec in entries:
                shift[rows] = vec
            # an output is [batch, features] (a pooler) or [batch, seq, features]
            handles.append(encoder.get_submodule(path).register_forward_hook(
                lambda m, args, out, s=shift: out + s.view(s.shape[0], *[1] * (out.dim() - 2), s.shape[1])))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _bias_offsets(encoder: nn.Module, art_dir: Path) -> dict[str, torch.Tensor]:
    """Trained bias minus the shared encoder's, by encoder module path (modules left unchanged are skipped)."""
    from safetensors import safe_open
    prefix = "encoder."  # the classifier's encoder attribute
    offsets = {}
    with safe_open(str(Path(art_dir) / WEIGHTS_FILE), "pt") as f:
        for key in f.keys():  # noqa: SIM118  (safe_open is not a dict)
            if is_head_param(key):
                continue
            if not (key.startswith(prefix) and _is_bias(key)):
                raise UserError(f"{art_dir / WEIGHTS_FILE}: {key} is not an encoder bias (not a BitFit artefact?)")
            path = key[len(prefix):-len(".bias")]
            try:
                module = encoder.get_submodule(path)
            except AttributeError:
                raise UserError(f"{art_dir / WEIGHTS_FILE}: bias for {path}, which the base encoder does not have") from None
            base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
            trained = f.get_tensor(key)
            if getattr(base, "bias", None) is None or tuple(base.bias.shape) != tuple(trained.shape):
                raise UserError(f"{art_dir / WEIGHTS_FILE}: {key} has shape {tuple(trained.shape)}, which does "
                                f"not fit the base encoder")
            delta = trained.to(base.bias.dtype) - base.bias.detach()
            if bool(delta.any()):
                offsets[path] = delta
    return offsets
