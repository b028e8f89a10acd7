"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021), written here: peft has none.

Each adapter is down-projection (hidden -> hidden / reduction), ReLU, up-projection back, added to
its input (a residual). The up-projection starts near zero, so before training every adapter is
almost the identity and the model computes what the pretrained encoder computed. An adapter is
inserted by wrapping an output projection of each layer (`AdapterLinear`: base_layer, then
`h + adapter(h)`), before that sub-layer's dropout, residual and LayerNorm (ModernBERT, pre-norm: before
the residual); the projections' names per encoder family are in `layout.LAYOUTS`:

- houlsby: after the attention output projection and after the feed-forward output projection;
- pfeiffer: after the feed-forward output projection only (half the adapters, about the same accuracy
  in the AdapterFusion paper).

What trains: the adapters and the head; with houlsby also the LayerNorms of every layer, as in
Houlsby et al. ("we also train the layer normalization parameters"), while the Pfeiffer
configuration keeps them frozen (AdapterHub's default). Wrapping a module (rather than a forward
hook on the Linear) keeps the adapter when int8 quantisation swaps the Linear layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.registry import METHODS
from .artifact import TensorArtifactMethod
from .base import is_head_param
from .layout import output_projections, replace_module

UP_INIT_STD = 1e-3  # near-identity start; exact zeros would also zero the down-projection's gradient


class Bottleneck(nn.Module):
    """x [.., hidden] -> up(relu(down(x))) [.., hidden]."""

    def __init__(self, hidden: int, bottleneck: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.normal_(self.down.weight, std=init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.normal_(self.up.weight, std=UP_INIT_STD)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(x)))


class AdapterLinear(nn.Module):
    """A frozen projection followed by a residual bottleneck adapter on its output."""

    def __init__(self, base_layer: nn.Linear, bottleneck: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.base_layer = base_layer
        w = base_layer.weight
        with torch.device(w.device):  # meta when counting parameters
            self.adapter = Bottleneck(base_layer.out_features, bottleneck, init_std).to(w.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)  # [batch, seq, hidden]
        return h + self.adapter(h)


@dataclass
class AdapterOptions:
    adapter_kind: str = field(default="pfeiffer", metadata={"help": "bottleneck adapter placement: houlsby (after attention and feed-forward) or pfeiffer (after feed-forward)"})
    adapter_reduction: int = field(default=16, metadata={"help": "bottleneck adapter reduction factor: hidden size / bottleneck size", "search": {"choices": [4, 8, 16, 32, 64]}})

    def checks(self) -> list[tuple[bool, str, str, Any]]:
        return [(self.adapter_kind not in ("houlsby", "pfeiffer"), "adapter_kind", "must be houlsby or pfeiffer",
                 self.adapter_kind),
                (self.adapter_reduction < 1, "adapter_reduction", "must be >= 1", self.adapter_reduction)]


@METHODS.register("adapter")
class BottleneckAdapter(TensorArtifactMethod):
    name = "adapter"
    decoder_refusal = ("its bottleneck modules follow the output projections of encoder layers (methods/layout.py) "
                       "and its artefact loads onto the classifier alone; lora or ia3 adapt a decoder")
    Options = AdapterOptions
    # Adapters start as (nearly) the identity and have few weights: they need a large lr to move within
    # a few epochs (Houlsby et al. searched 3e-5..3e-3). On MiniLM, first 4,000 movie sentences, one
    # epoch: 3e-3 reached 83.3% validation / 80.4% test against 82.5% / 77.9% at 1e-3.
    default_lr = 3e-3
    plan_rank = 40

    def apply(self, model: nn.Module) -> nn.Module:
        kind, reduction = self.options.adapter_kind, self.options.adapter_reduction
        places = output_projections(model, "adapter")
        hidden = places[0][0].get_submodule(places[0][2]).out_features
        bottleneck = max(1, hidden // reduction)
        std = float(getattr(model.config, "encoder", {}).get("initializer_range", 0.02))
        for p in model.parameters():
            p.requires_grad_(False)
        for layer, attn_out, ffn_out in places:
            for name in ((attn_out, ffn_out) if kind == "houlsby" else (ffn_out,)):
                replace_module(layer, name, AdapterLinear(layer.get_submodule(name), bottleneck, std))
            if kind == "houlsby":
                for m in layer.modules():
                    if isinstance(m, nn.LayerNorm):
                        m.requires_grad_(True)
        for n, p in model.named_parameters():
            if ".adapter." in n or is_head_param(n):
                p.requires_grad_(True)
        return model

    def method_params(self, model: nn.Module) -> dict[str, int]:
        return {n: p.numel() for n, p in model.named_parameters() if ".adapter." in n}

