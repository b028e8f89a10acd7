"""Prefix tuning for encoders (Li & Liang 2021; P-tuning v2, Liu et al. 2022), written here.

peft's PrefixTuning feeds prefixes through `past_key_values`, which encoders in transformers 5 do not
accept ("Model does not support past key values"; for the transferkit classifier peft cannot even
infer the layer count). So each layer's self-attention is wrapped: the wrapper projects queries,
keys and values as the original module does, prepends `prefix_tokens` learned key and value vectors,
extends the attention mask so every real token sees the prefix, and runs the family's own attention
(`prefix_attention.py`: one wrapper per attention code path, found through `layout.LAYOUTS`).

The prefixes are initialised from the keys and values of randomly drawn vocabulary tokens (their
embeddings through each layer's key/value projection), so they start at the scale of real keys
instead of near zero, which would put much of every token's attention on empty values. The
encoder stays frozen; prefixes and head train. No MLP reparameterisation: P-tuning v2 found it
helps on some tasks and hurts on others, and per-layer prefixes trained stably at the lr below.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from ..core.registry import METHODS
from .artifact import TensorArtifactMethod
from .base import is_head_param
from .layout import LAYOUTS, find_layout, model_type, replace_module
from .prefix_attention import WRAPPERS, PrefixAttention, position_arguments


def _self_attentions(model: nn.Module) -> list[tuple[nn.Module, str, type[PrefixAttention]]]:
    """(layer, dotted name of its self-attention, the wrapper for it) per layer, or a one-line UserError."""
    layers, layout = find_layout(model, "prefix", "attention")
    kind = model_type(model)
    if kind not in LAYOUTS:  # an unlisted family with a known layout: its attention must not mix in positions
        extra = position_arguments(layers[0].get_submodule(layout.attention))
        if extra:
            raise UserError(f"prefix: unsupported encoder layout ({kind}): its self-attention takes "
                            f"{', '.join(extra)}, which prefix tuning does not know how to extend; lora adapts "
                            f"any encoder")
    return [(layer, layout.attention, WRAPPERS[layout.kind]) for layer in layers]


@torch.no_grad()
def _token_states(model: nn.Module, n: int, hidden: int, device: torch.device) -> torch.Tensor:
    """Embeddings of `n` random vocabulary tokens [1, n, hidden] (random normal if no embeddings module)."""
    encoder = getattr(model, "encoder", model)
    emb = getattr(encoder, "embeddings", None)
    words = encoder.get_input_embeddings() if hasattr(encoder, "get_input_embeddings") else None
    vocab = getattr(words, "num_embeddings", 0)
    if emb is None or not vocab:
        return torch.randn(1, n, hidden, device=device) * 0.02
    was_training = emb.training
    emb.eval()  # no dropout on the initial values
    low = 1000 if vocab > 2000 else 0  # real vocabularies keep specials and unused slots in the first ids
    ids = torch.randint(low, vocab, (1, n), device=device)
    states = emb(input_ids=ids)
    project = getattr(encoder, "embeddings_project", None)  # ELECTRA: embeddings narrower than the layers
    if isinstance(project, nn.Linear) and states.shape[-1] != hidden:
        states = project(states)
    emb.train(was_training)
    if states.shape[-1] != hidden:
        return torch.randn(1, n, hidden, device=device) * 0.02
    return states


@dataclass
class PrefixOptions:
    prefix_tokens: int = field(default=20, metadata={"help": "prefix tuning: virtual tokens prepended to every layer's keys and values", "search": {"low": 5, "high": 50}})

    def checks(self) -> list[tuple[bool, str, str, Any]]:
        return [(self.prefix_tokens < 1, "prefix_tokens", "must be >= 1", self.prefix_tokens)]


@METHODS.register("prefix")
class PrefixTuning(TensorArtifactMethod):
    name = "prefix"
    decoder_refusal = ("its prefixes go into the self-attention of an encoder family it knows (BERT, RoBERTa, "
                       "XLM-R, ELECTRA, DistilBERT, MPNet, DeBERTa-v2, ModernBERT); lora adapts a decoder's "
                       "attention")
    Options = PrefixOptions
    # Prefixes are a few thousand numbers per layer that must steer a frozen encoder: the P-tuning v2
    # recipes use 5e-3..1e-2. On MiniLM, first 4,000 movie sentences, one epoch: 1e-2 reached 79.0%
    # validation / 77.4% test against 78.3% / 75.6% at 5e-3.
    default_lr = 1e-2
    plan_rank = 60

    def apply(self, model: nn.Module) -> nn.Module:
        places = _self_attentions(model)
        n = self.options.prefix_tokens
        first = places[0][0].get_submodule(places[0][1])
        w = next(m for m in first.modules() if isinstance(m, nn.Linear)).weight  # a projection: [out, hidden]
        for p in model.parameters():
            p.requires_grad_(False)
        states = _token_states(model, n, w.shape[1], w.device)[0]  # [n, hidden]
        for layer, name, wrapper in places:
            attn = layer.get_submodule(name)
            with torch.no_grad():
                pk, pv = (x.detach().clone() for x in wrapper.keys_values(attn, states))  # [n, all_head] each
            replace_module(layer, name, wrapper(attn, pk, pv))
        for n_, p in model.named_parameters():
            if ".prefix_" in n_ or is_head_param(n_):
                p.requires_grad_(True)
        return model

    def method_params(self, model: nn.Module) -> dict[str, int]:
        return {n: p.numel() for n, p in model.named_parameters() if ".prefix_" in n}
