"""Self-attention with learned key/value prefixes, one wrapper per attention code path (`Layout.kind`).

Prefix tuning (P-tuning v2) gives every layer `prefix` extra key/value pairs that every token attends
to. transformers' encoders have no hook for that (peft's route, `past_key_values`, is refused by
encoders), and their attentions differ in ways a generic hook on the key/value projections cannot
see: positions enter the scores (MPNet's relative bias, DeBERTa-v2's disentangled content-to-position
and position-to-content terms) or the keys themselves (ModernBERT's rotary embedding, after its fused
Wqkv projection). So each wrapper recomputes its family's attention from the wrapped module's own
weights and functions, and adds the prefix where the family's math allows one without a position:

- BERT layout (BERT, RoBERTa, XLM-R, ELECTRA), DistilBERT, ModernBERT: the prefix keys/values are
  concatenated in front of the sequence's and the model's own attention function runs (sdpa or eager
  through `ALL_ATTENTION_FUNCTIONS`); ModernBERT rotates queries and sequence keys as before, the
  prefix keys are position-free (as a rotary decoder's cached prefix is), and its sliding-window
  mask keeps the prefix visible to every token;
- MPNet: the relative position bias is zero for prefix keys;
- DeBERTa-v2: prefix keys get the content-to-content score alone (no relative position to them).

Every real token sees the prefix, padding or sliding window aside (`extend_mask`). The sequence's own
scores are computed exactly as the wrapped module computes them, so with the prefix masked out a
wrapper reproduces the original layer (tests/methods/test_families.py checks this per family).
"""
from __future__ import annotations

import inspect
import math
import sys
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError

# Parameters of a self-attention forward that carry no position information (other names, such as RoFormer's
# sinusoidal_pos, mean the attention mixes positions in itself: a BERT-named layout of an unlisted family
# must not have them, or the BERT wrapper would drop them).
PLAIN_ARGS = {"self", "hidden_states", "attention_mask", "head_mask", "encoder_hidden_states",
              "encoder_attention_mask", "past_key_value", "past_key_values", "cache", "cache_position",
              "output_attentions", "kwargs"}
IMPLEMENTATIONS = ("sdpa", "eager")  # attention functions whose 4-d masks `extend_mask` extends


def extend_mask(mask: Any, prefix: int) -> Any:
    """The attention mask with `prefix` always-visible key positions in front (last dim).

    Boolean/integer masks mark visible keys with True/1 (sdpa, DeBERTa-v2); float masks are additive
    (eager, MPNet: 0 visible).
    """
    if mask is None:
        return None  # nothing masked: the prefix is visible too
    if not isinstance(mask, torch.Tensor):
        raise UserError(f"prefix: attention masks of type {type(mask).__name__} are not supported; "
                        "use the sdpa or eager attention implementation")
    visible = torch.zeros if mask.is_floating_point() else torch.ones
    pad = visible(*mask.shape[:-1], prefix, dtype=mask.dtype, device=mask.device)  # [.., q, prefix]
    return torch.cat([pad, mask], dim=-1)


def _heads(x: torch.Tensor, d: int) -> torch.Tensor:
    """[b, n, heads * d] -> [b, heads, n, d]."""
    return x.view(x.shape[0], x.shape[1], -1, d).transpose(1, 2)


def _attention_function(module: nn.Module) -> Any:
    """The attention function transformers selected for the wrapped module (sdpa or eager)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    impl = module.config._attn_implementation
    if impl not in IMPLEMENTATIONS:
        raise UserError(f"prefix: the {impl} attention implementation is not supported (its masks cannot be "
                        f"extended by the prefix); load the model with sdpa or eager")
    eager = sys.modules[type(module).__module__].eager_attention_forward  # the model's own fallback
    return ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager)


class PrefixAttention(nn.Module):
    """A self-attention module (`attn`) with learned key and value prefixes [prefix, all_head_size]."""

    def __init__(self, attn: nn.Module, prefix_key: torch.Tensor, prefix_value: torch.Tensor) -> None:
        super().__init__()
        self.attn = attn
        self.prefix_key = nn.Parameter(prefix_key)
        self.prefix_value = nn.Parameter(prefix_value)

    @staticmethod
    def keys_values(attn: nn.Module, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The module's keys and values of hidden states [n, hidden] -> ([n, all_head], [n, all_head])."""
        raise NotImplementedError

    def _prefix(self, b: int, d: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix keys and values per row: [b, heads, prefix, d] each."""
        pk = _heads(self.prefix_key.unsqueeze(0), d).expand(b, -1, -1, -1).to(like.dtype)
        pv = _heads(self.prefix_value.unsqueeze(0), d).expand(b, -1, -1, -1).to(like.dtype)
        return pk, pv

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, scaling: float,
                **kwargs: Any) -> tuple[torch.Tensor, Any]:
        """The model's attention function over [prefix; sequence] keys and values ([b, heads, n, d] each);
        returns ([b, n, heads * d], weights)."""
        a = self.attn
        pk, pv = self._prefix(k.shape[0], k.shape[-1], k)
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)  # [b, heads, prefix + n, d]
        dropout = a.dropout.p if isinstance(getattr(a, "dropout", None), nn.Dropout) else \
            float(getattr(a, "attention_dropout", 0.0))
        out, weights = _attention_function(a)(a, q, k, v, extend_mask(mask, self.prefix_key.shape[0]),
                                              dropout=dropout if self.training else 0.0, scaling=scaling, **kwargs)
        return out.reshape(q.shape[0], q.shape[2], -1).contiguous(), weights


def _self_attention_only(kwargs: dict) -> dict:
    for k in ("encoder_hidden_states", "encoder_attention_mask", "cache", "past_key_values", "past_key_value"):
        kwargs.pop(k, None)  # encoder self-attention: no cross-attention, no cache
    return kwargs


class BertPrefix(PrefixAttention):
    """BERT layout: attention.self.{query,key,value}; the output projection is outside (attention.output)."""

    @staticmethod
    def keys_values(attn: nn.Module, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attn.key(states), attn.value(states)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        a, d = self.attn, self.attn.attention_head_size
        q, k, v = (_heads(p(hidden_states), d) for p in (a.query, a.key, a.value))
        return self._attend(q, k, v, attention_mask, a.scaling, **_self_attention_only(kwargs))


class DistilBertPrefix(PrefixAttention):
    """DistilBERT: attention.{q,k,v}_lin, and out_lin inside the same module."""

    @staticmethod
    def keys_values(attn: nn.Module, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attn.k_lin(states), attn.v_lin(states)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        a, d = self.attn, self.attn.attention_head_size
        q, k, v = (_heads(p(hidden_states), d) for p in (a.q_lin, a.k_lin, a.v_lin))
        out, weights = self._attend(q, k, v, attention_mask, a.scaling, **_self_attention_only(kwargs))
        return a.out_lin(out), weights


class ModernBertPrefix(PrefixAttention):
    """ModernBERT: fused attn.Wqkv, rotary queries and keys (the prefix keys stay position-free), attn.Wo."""

    @staticmethod
    def keys_values(attn: nn.Module, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, k, v = attn.Wqkv(states).chunk(3, dim=-1)  # Wqkv's rows are [q; k; v]
        return k, v

    def forward(self, hidden_states: torch.Tensor, position_embeddings: Any = None, attention_mask: Any = None,
                **kwargs: Any) -> tuple[Any, Any]:
        a, d = self.attn, self.attn.head_dim
        q, k, v = (_heads(x, d) for x in a.Wqkv(hidden_states).chunk(3, dim=-1))
        cos, sin = position_embeddings
        q, k = sys.modules[type(a).__module__].apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
        # the sliding window is in the (extended) mask for sdpa and eager; the flag is for flash kernels
        kwargs.pop("sliding_window", None)
        out, weights = self._attend(q, k, v, attention_mask, d ** -0.5, **_self_attention_only(kwargs))
        return a.out_drop(a.Wo(out)), weights


class MPNetPrefix(PrefixAttention):
    """MPNet: attention.attn.{q,k,v,o}, eager attention with a relative position bias (zero for prefix keys)."""

    @staticmethod
    def keys_values(attn: nn.Module, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attn.k(states), attn.v(states)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Any = None, position_bias: Any = None,
                output_attentions: bool = False, **kwargs: Any) -> tuple[Any, ...]:
        a, d = self.attn, self.attn.attention_head_size
        q, k, v = (_heads(p(hidden_states), d) for p in (a.q, a.k, a.v))
        pk, pv = self._prefix(k.shape[0], d, k)
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)  # [b, heads, prefix + n, d]
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)  # [b, heads, n, prefix + n]
        p = self.prefix_key.shape[0]
        if position_bias is not None:
            scores = scores + extend_mask(position_bias, p)  # a zero bias towards the prefix
        if attention_mask is not None:
            scores = scores + extend_mask(attention_mask, p)
        probs = a.dropout(nn.functional.softmax(scores, dim=-1))
        c = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        o = a.o(c.view(*c.shape[:-2], a.all_head_size))
        return (o, probs) if output_attentions else (o,)


class DebertaV2Prefix(PrefixAttention):
    """DeBERTa-v2/v3: attention.self.{query,key,value}_proj with disentangled relative attention; prefix keys
    get the content-to-content score alone (scaled as the module scales it)."""

    @staticmethod
    def keys_values(attn: nn.Module, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attn.key_proj(states), attn.value_proj(states)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Any, output_attentions: bool = False,
                query_states: Any = None, relative_pos: Any = None, rel_embeddings: Any = None) -> tuple[Any, Any]:
        a, h = self.attn, self.attn.num_attention_heads
        query_states = hidden_states if query_states is None else query_states
        q = a.transpose_for_scores(a.query_proj(query_states), h)  # [b * heads, n, d]
        k = a.transpose_for_scores(a.key_proj(hidden_states), h)
        v = a.transpose_for_scores(a.value_proj(hidden_states), h)
        factor = 1 + ("c2p" in a.pos_att_type) + ("p2c" in a.pos_att_type)
        scale = torch.sqrt(torch.tensor(q.size(-1), dtype=torch.float) * factor).to(dtype=q.dtype)
        scores = torch.bmm(q, k.transpose(-1, -2) / scale)  # [b * heads, n, n]
        if a.relative_attention:
            scores = scores + a.disentangled_attention_bias(q, k, relative_pos, a.pos_dropout(rel_embeddings),
                                                            factor)
        b, p = hidden_states.shape[0], self.prefix_key.shape[0]
        pk, pv = (x.reshape(b * h, p, -1) for x in self._prefix(b, q.size(-1), q))  # [b * heads, prefix, d]
        scores = torch.cat([torch.bmm(q, pk.transpose(-1, -2) / scale), scores], dim=-1)  # [b * heads, n, p + n]
        scores = scores.view(-1, h, scores.size(-2), scores.size(-1))
        mask = extend_mask(attention_mask.bool(), p)
        scores = scores.masked_fill(~mask, torch.finfo(q.dtype).min)
        probs = a.dropout(nn.functional.softmax(scores, dim=-1))  # [b, heads, n, p + n]
        context = torch.bmm(probs.view(-1, probs.size(-2), probs.size(-1)), torch.cat([pv, v], dim=1))
        context = context.view(-1, h, context.size(-2), context.size(-1)).permute(0, 2, 1, 3).contiguous()
        context = context.view(*context.shape[:-2], -1)  # [b, n, hidden]
        return context, (probs if output_attentions else None)


WRAPPERS: dict[str, type[PrefixAttention]] = {"bert": BertPrefix, "distilbert": DistilBertPrefix,
                                              "modernbert": ModernBertPrefix, "mpnet": MPNetPrefix,
                                              "deberta-v2": DebertaV2Prefix}


def position_arguments(attn: nn.Module) -> list[str]:
    """Parameters of the attention's forward beyond the plain ones (`PLAIN_ARGS`)."""
    return [n for n in inspect.signature(type(attn).forward).parameters if n not in PLAIN_ARGS]
