"""Where things sit inside an encoder: its layer list and the modules methods attach to, per family.

Methods that insert modules (adapters after output projections, prefixes inside self-attention) need
to know each family's names, and those differ: BERT's `attention.self.{query,key,value}` and
`attention.output.dense`, DistilBERT's `attention.{q,k,v,out}_lin` and `ffn.lin2`, MPNet's
`attention.attn.{q,k,v,o}`, DeBERTa-v2's `attention.self.{query,key,value}_proj`, ModernBERT's fused
`attn.Wqkv`, `attn.Wo` and `mlp.Wo`. `LAYOUTS` holds one row per family (model_type). A model type not
listed (a BERT clone such as CamemBERT, or MiniLM saved as `bert`) gets the first row whose names its
layers have; anything else is a one-line UserError naming what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..core.errors import UserError


@dataclass(frozen=True)
class Layout:
    """Module names relative to one encoder layer."""

    attention: str  # the self-attention module (prefix tuning wraps it)
    projections: tuple[str, ...]  # its query/key/value Linear layers (one name when fused), relative to it
    attention_out: str  # the attention output projection (Houlsby adapters follow it)
    ffn_out: str  # the feed-forward output projection (every bottleneck adapter follows it)
    kind: str  # the attention's code path: prefix tuning has one wrapper per kind


BERT = Layout("attention.self", ("query", "key", "value"), "attention.output.dense", "output.dense", "bert")
LAYOUTS: dict[str, Layout] = {
    "bert": BERT, "roberta": BERT, "xlm-roberta": BERT, "electra": BERT, "camembert": BERT,
    "distilbert": Layout("attention", ("q_lin", "k_lin", "v_lin"), "attention.out_lin", "ffn.lin2", "distilbert"),
    "mpnet": Layout("attention.attn", ("q", "k", "v"), "attention.attn.o", "output.dense", "mpnet"),
    "deberta-v2": Layout("attention.self", ("query_proj", "key_proj", "value_proj"), "attention.output.dense",
                         "output.dense", "deberta-v2"),
    "modernbert": Layout("attn", ("Wqkv",), "attn.Wo", "mlp.Wo", "modernbert"),
}


def model_type(model: nn.Module) -> str:
    """The encoder's model_type (the transferkit classifier keeps the encoder config as a dict)."""
    cfg = model.config
    return cfg.encoder.get("model_type", "?") if hasattr(cfg, "encoder") else getattr(cfg, "model_type", "?")


def encoder_layers(model: nn.Module, method: str) -> tuple[str, nn.ModuleList]:
    """(dotted name, ModuleList) of the transformer blocks: the longest ModuleList named layer/layers."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, m in model.named_modules():
        is_layers = isinstance(m, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers") and len(m)
        if is_layers and (best is None or len(m) > len(best[1])):
            best = (name, m)
    if best is None:
        raise UserError(f"{method}: unsupported encoder layout ({model_type(model)}): "
                        "no list of encoder layers (a ModuleList named layer or layers)")
    return best


def _linear(layer: nn.Module, name: str) -> bool:
    try:
        return isinstance(layer.get_submodule(name), nn.Linear)
    except AttributeError:
        return False


def _names(layout: Layout, part: str) -> tuple[str, ...]:
    """The Linear layers `part` ("outputs" or "attention") needs, relative to a layer."""
    if part == "outputs":
        return (layout.attention_out, layout.ffn_out)
    return tuple(f"{layout.attention}.{p}" for p in layout.projections)


def find_layout(model: nn.Module, method: str, part: str) -> tuple[list[nn.Module], Layout]:
    """(the encoder's layers, their family's Layout) where every layer has the Linear layers `part` needs
    ("outputs": attention and feed-forward output projections; "attention": query/key/value), or a UserError.

    A listed family must have its own names; an unlisted one takes the first row that fits."""
    _, layers = encoder_layers(model, method)
    kind = model_type(model)
    rows = [LAYOUTS[kind]] if kind in LAYOUTS else list(dict.fromkeys(LAYOUTS.values()))
    for layout in rows:
        if all(_linear(layer, n) for layer in layers for n in _names(layout, part)):
            return list(layers), layout
    what = "attention and feed-forward output projections" if part == "outputs" else "query/key/value projections"
    known = "; ".join(" + ".join(_names(layout, part)) for layout in rows)
    raise UserError(f"{method}: unsupported encoder layout ({kind}): each layer needs {what}, found none of: {known}")


def output_projections(model: nn.Module, method: str) -> list[tuple[nn.Module, str, str]]:
    """Per layer: (layer module, attention output projection name, feed-forward output projection name)."""
    layers, layout = find_layout(model, method, "outputs")
    return [(layer, layout.attention_out, layout.ffn_out) for layer in layers]


def replace_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    """Set the submodule at `dotted` (relative to `root`) to `new`."""
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
