"""Exact parameter accounting without loading weights: models are built on the meta device.

`parameter_report("bert-base-uncased", "lora", lora_r=8)` counts total, trainable, head and method
(e.g. LoRA) parameters of the transferkit classifier with that method applied, and the share of the
adapted weight matrices, in well under a second even for large configs. Common hub names resolve
to their architecture config offline (the figures below are those models' published configs), a
local config.json or model folder works too, and bundled names use their own config.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config.finetune import MethodConfig
from ..core.errors import UserError
from ..core.registry import METHODS
from ..methods.base import count_parameters
from .classifier import TransferkitClassifierConfig, TransferkitForSequenceClassification
from .resolve import resolve_model

# Architecture configs of well-known hub models, so `params` works offline.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "bert-base-uncased": {"model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
                          "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
                          "type_vocab_size": 2},
    "bert-large-uncased": {"model_type": "bert", "vocab_size": 30522, "hidden_size": 1024, "num_hidden_layers": 24,
                           "num_attention_heads": 16, "intermediate_size": 4096, "max_position_embeddings": 512,
                           "type_vocab_size": 2},
    "distilbert-base-uncased": {"model_type": "distilbert", "vocab_size": 30522, "dim": 768, "n_layers": 6,
                                "n_heads": 12, "hidden_dim": 3072, "max_position_embeddings": 512},
    "roberta-base": {"model_type": "roberta", "vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 514,
                     "type_vocab_size": 1, "pad_token_id": 1},
    "gpt2": {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12,
             "n_positions": 1024},
}


def encoder_config(model: str) -> dict[str, Any]:
    """The encoder's config as a dict: a known hub name, a config.json, a model folder or a bundled name."""
    if model in KNOWN_CONFIGS:
        return dict(KNOWN_CONFIGS[model])
    p = Path(model)
    if p.is_file():
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{p}: not a JSON model config ({e})") from None
        if "model_type" not in d:
            raise UserError(f"{p}: no model_type in this config")
        return d
    from transformers import AutoConfig

    try:
        resolved = resolve_model(model)
    except UserError as e:
        raise UserError(f"{e}; known configs: {', '.join(KNOWN_CONFIGS)}") from None
    d = AutoConfig.from_pretrained(resolved.path).to_dict()
    return d.get("encoder", d) if d.get("model_type") == "transferkit_classifier" else d


def parameter_report(model: str, method: str = "full", num_labels: int = 2, head: str = "linear",
                     pool_layers: int = 1, **method_options: Any) -> dict[str, Any]:
    """Total, trainable, head and method parameter counts of the classifier with `method` applied.

    Counts follow peft: for LoRA the total includes peft's trainable copy of the head. `method_params`
    are what the method adds or selects besides the head (LoRA/IA3/adapter weights, prefixes, BitFit biases).
    """
    import torch

    if num_labels < 2:
        raise UserError(f"num_labels must be >= 2, got {num_labels}")
    opts = MethodConfig.from_dict({"name": method, **{k: v for k, v in method_options.items() if v is not None}})
    m = METHODS.get(method)(opts)
    enc = encoder_config(model)
    enc.pop("architectures", None)
    config = TransferkitClassifierConfig(encoder=enc, num_labels=num_labels, pool_layers=pool_layers)
    if head == "mlp":
        config.head_hidden = config.hidden_size
    with torch.device("meta"):
        net = m.apply(TransferkitForSequenceClassification(config))
    counts = count_parameters(net)
    added = m.method_params(net)
    params = dict(net.named_parameters())
    adapted = {a for a in (_adapted_module(n, params) for n in added) if a is not None}
    adapted_weights = sum(params[a + ".base_layer.weight"].numel() for a in adapted)
    report = {"model": model, "method": method, **counts, "method_params": sum(added.values()),
              "adapted_matrices": len(adapted), "adapted_weights": adapted_weights}
    report["method_share_of_adapted"] = report["method_params"] / adapted_weights if adapted_weights else None
    return report


def _adapted_module(name: str, params: dict[str, Any]) -> str | None:
    """The wrapped layer a method parameter belongs to (the nearest module with a `base_layer`), if any."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:i]) + ".base_layer.weight" in params:
            return ".".join(parts[:i])
    return None
