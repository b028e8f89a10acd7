"""Prefix tuning for encoders (Li & Liang 2021; P-tuning v2, Liu et al. 2022), written here.

peft's PrefixTuning feeds prefixes through `past_key_values`, which BERT-style encoders in
transformers 5 do not accept ("Model does not support past key values"; for the transferkit
classifier peft cannot even infer the layer count). So each layer's self-attention is wrapped
(`PrefixSelfAttention`): it projects queries, keys and values as the original module does, prepends
`prefix_tokens` learned key and value vectors, extends the attention mask so every real token sees
the prefix, and calls the attention function transformers selected for the model (sdpa or eager,
through `ALL_ATTENTION_FUNCTIONS`), so the model's own kernels are used.

The prefixes are initialised from the keys and values of randomly drawn vocabulary tokens (their
embeddings through each layer's key/value projection), so they start at the scale of real keys
instead of near zero, which would put much of every token's attention on empty values. The
encoder stays frozen; prefixes and head train. No MLP reparameterisation: P-tuning v2 found it
helps on some tasks and hurts on others, and per-layer prefixes trained stably at the lr below.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from ..core.registry import METHODS
from .artifact import TensorArtifactMethod
from .base import is_head_param
from .layout import encoder_layers, model_type


def extend_mask(mask: Any, prefix: int) -> Any:
    """The attention mask with `prefix` always-visible key positions in front (last dim).

    Boolean/integer masks mark visible keys with True/1 (sdpa); float masks are additive (eager: 0 visible).
    """
    if mask is None:
        return None  # nothing masked: the prefix is visible too
    if not isinstance(mask, torch.Tensor):
        raise UserError(f"prefix: attention masks of type {type(mask).__name__} are not supported; "
                        "use the sdpa or eager attention implementation")
    visible = torch.zeros if mask.is_floating_point() else torch.ones
    pad = visible(*mask.shape[:-1], prefix, dtype=mask.dtype, device=mask.device)  # [.., q, prefix]
    return torch.cat([pad, mask], dim=-1)


class PrefixSelfAttention(nn.Module):
    """A BERT-layout self-attention (query/key/value Linear layers) with learned key/value prefixes."""

    def __init__(self, attn: nn.Module, prefix_key: torch.Tensor, prefix_value: torch.Tensor) -> None:
        super().__init__()
        self.attn = attn
        self.prefix_key = nn.Parameter(prefix_key)  # [prefix, all_head_size]
        self.prefix_value = nn.Parameter(prefix_value)  # [prefix, all_head_size]

    def forward(self, hidden_states: torch.Tensor, attention_mask: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        for k in ("encoder_hidden_states", "encoder_attention_mask", "cache", "past_key_values", "past_key_value"):
            kwargs.pop(k, None)  # encoder self-attention: no cross-attention, no cache
        a = self.attn
        b, s = hidden_states.shape[:2]
        d = a.attention_head_size

        def heads(x: torch.Tensor) -> torch.Tensor:  # [b, n, heads * d] -> [b, heads, n, d]
            return x.view(x.shape[0], x.shape[1], -1, d).transpose(1, 2)

        q, k, v = heads(a.query(hidden_states)), heads(a.key(hidden_states)), heads(a.value(hidden_states))
        pk = heads(self.prefix_key.unsqueeze(0)).expand(b, -1, -1, -1).to(k.dtype)  # [b, heads, prefix, d]
        pv = heads(self.prefix_value.unsqueeze(0)).expand(b, -1, -1, -1).to(v.dtype)
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)  # [b, heads, prefix + s, d]
        mask = extend_mask(attention_mask, self.prefix_key.shape[0])
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        eager = sys.modules[type(a).__module__].eager_attention_forward  # the model's own fallback
        fn = ALL_ATTENTION_FUNCTIONS.get_interface(a.config._attn_implementation, eager)
        out, weights = fn(a, q, k, v, mask, dropout=a.dropout.p if self.training else 0.0, scaling=a.scaling, **kwargs)
        return out.reshape(b, s, -1).contiguous(), weights  # [b, s, hidden]


def _self_attentions(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(parent `attention` module, its BERT-layout self-attention) per layer, or a UserError."""
    _, layers = encoder_layers(model, "prefix")
    found = []
    for layer in layers:
        parent = getattr(layer, "attention", None)
        attn = getattr(parent, "self", None)
        if not all(isinstance(getattr(attn, n, None), nn.Linear) for n in ("query", "key", "value")) or \
                not hasattr(attn, "attention_head_size"):
            raise UserError(f"prefix: unsupported encoder layout ({model_type(model)}): needs BERT-style "
                            "attention.self.query/key/value layers (BERT, RoBERTa, ELECTRA, MiniLM)")
        found.append((parent, attn))
    return found


@torch.no_grad()
def _token_states(model: nn.Module, n: int, hidden: int, device: torch.device) -> torch.Tensor:
    """Embeddings of `n` random vocabulary tokens [1, n, hidden] (random normal if no embeddings module)."""
    emb = getattr(getattr(model, "encoder", model), "embeddings", None)
    vocab = getattr(getattr(emb, "word_embeddings", None), "num_embeddings", 0)
    if emb is None or not vocab:
        return torch.randn(1, n, hidden, device=device) * 0.02
    was_training = emb.training
    emb.eval()  # no dropout on the initial values
    low = 1000 if vocab > 2000 else 0  # real vocabularies keep specials and unused slots in the first ids
    ids = torch.randint(low, vocab, (1, n), device=device)
    states = emb(input_ids=ids)
    emb.train(was_training)
    return states


@dataclass
class PrefixOptions:
    prefix_tokens: int = field(default=20, metadata={"help": "prefix tuning: virtual tokens prepended to every layer's keys and values", "search": {"low": 5, "high": 50}})

    def checks(self) -> list[tuple[bool, str, str, Any]]:
        return [(self.prefix_tokens < 1, "prefix_tokens", "must be >= 1", self.prefix_tokens)]


@METHODS.register("prefix")
class PrefixTuning(TensorArtifactMethod):
    name = "prefix"
    decoder_refusal = ("its prefixes go into BERT-style self-attention (attention.self.query/key/value) of an "
                       "encoder, which a decoder does not have; lora adapts a decoder's attention")
    Options = PrefixOptions
    # Prefixes are a few thousand numbers per layer that must steer a frozen encoder: the P-tuning v2
    # recipes use 5e-3..1e-2. On MiniLM, first 4,000 movie sentences, one epoch: 1e-2 reached 79.0%
    # validation / 77.4% test against 78.3% / 75.6% at 5e-3.
    default_lr = 1e-2
    plan_rank = 60

    def apply(self, model: nn.Module) -> nn.Module:
        places = _self_attentions(model)
        n = self.options.prefix_tokens
        w = places[0][1].key.weight
        for p in model.parameters():
            p.requires_grad_(False)
        states = _token_states(model, n, w.shape[1], w.device)  # [1, n, hidden]
        for parent, attn in places:
            with torch.no_grad():
                pk, pv = attn.key(states)[0].detach().clone(), attn.value(states)[0].detach().clone()
            parent.self = PrefixSelfAttention(attn, pk, pv)
        for n_, p in model.named_parameters():
            if ".prefix_" in n_ or is_head_param(n_):
                p.requires_grad_(True)
        return model

    def method_params(self, model: nn.Module) -> dict[str, int]:
        return {n: p.numel() for n, p in model.named_parameters() if ".prefix_" in n}
