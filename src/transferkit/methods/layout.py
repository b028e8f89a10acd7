"""Where things sit inside an encoder: its layer list and the projections methods attach to.

BERT, RoBERTa, ELECTRA, XLM-R and MiniLM share one layout (`encoder.layer.N.attention.output.dense`,
`encoder.layer.N.output.dense`, `attention.self.{query,key,value}`); DistilBERT has its own
(`transformer.layer.N.attention.out_lin`, `ffn.lin2`). Methods that insert modules ask here and get
a UserError naming the model type for any other layout.
"""
from __future__ import annotations

from torch import nn

from ..core.errors import UserError

# (attention output projection, feed-forward output projection) relative to one encoder layer.
OUTPUT_PROJECTIONS: list[tuple[str, str]] = [
    ("attention.output.dense", "output.dense"),  # BERT, RoBERTa, ELECTRA, XLM-R, MiniLM
    ("attention.out_lin", "ffn.lin2"),  # DistilBERT
]


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


def output_projections(model: nn.Module, method: str) -> list[tuple[nn.Module, str, str]]:
    """Per layer: (layer module, attention output projection name, feed-forward output projection name)."""
    _, layers = encoder_layers(model, method)
    names = {n for n, _ in layers[0].named_modules()}
    for attn_out, ffn_out in OUTPUT_PROJECTIONS:
        if attn_out in names and ffn_out in names:
            return [(layer, attn_out, ffn_out) for layer in layers]
    known = "; ".join(f"{a} + {f}" for a, f in OUTPUT_PROJECTIONS)
    raise UserError(f"{method}: unsupported encoder layout ({model_type(model)}): each layer needs one of "
                    f"these output projections: {known}")


def replace_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    """Set the submodule at `dotted` (relative to `root`) to `new`."""
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
