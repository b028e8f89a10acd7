"""Prediction: one `Predictor` that the CLI, evaluation and (later) serving all go through.

Texts are tokenized in one call, sorted by length and padded per batch (dynamic padding), run
under `torch.inference_mode`, and returned in input order. A LoRA adapter is merged into the
weights before serving, so prediction costs the same as a plain model. `Predictor.from_runs` serves
several runs of one base model on a single encoder (`multi_adapter.AdapterPredictor`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .data.batches import FeatureData, TokenData, sorted_batches
from .data.tokens import tokenize
from .errors import UserError


@torch.inference_mode()
def _batched(module: nn.Module, fn: Any, data: TokenData | FeatureData, batch_size: int, pad_id: int,
             device: torch.device | str) -> torch.Tensor:
    """`fn(batch) -> [batch, k]` over length-sorted batches in eval mode; rows back in input order."""
    was_training = module.training
    module.eval()
    out: torch.Tensor | None = None
    for idx in sorted_batches(data.lengths(), batch_size):
        batch = {k: v.to(device) for k, v in data.collate(idx, pad_id).items() if k != "labels"}
        rows = fn(batch).float().cpu()  # [batch, k]
        if out is None:
            out = torch.empty(len(data), rows.shape[-1])
        out[idx] = rows
    module.train(was_training)
    return out if out is not None else torch.empty(0, 0)


def predict_logits(model: nn.Module, data: TokenData | FeatureData, batch_size: int = 64, pad_id: int = 0,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits [n, classes] in the input order, computed in length-sorted batches."""
    return _batched(model, lambda b: model(**b).logits, data, batch_size, pad_id, device)


def pooled_features(model: nn.Module, data: TokenData, batch_size: int = 64, pad_id: int = 0,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Pooled encoder vectors [n, hidden] of a (frozen) classifier, in input order."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _batched(base, lambda b: base.pool(**b), data, batch_size, pad_id, device)


class Predictor:
    """A trained classifier ready to label texts: `Predictor.from_run(run_dir).predict(texts)`."""

    def __init__(self, model: nn.Module, tokenizer: Any, label_names: list[str], max_length: int = 256,
                 batch_size: int = 64, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer, self.label_names = tokenizer, list(label_names)
        self.max_length, self.batch_size = max_length, batch_size
        self.pad_id = tokenizer.pad_token_id or 0
        self.last_throughput: float | None = None

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | None = None, quantize: bool = False,
                 batch_size: int = 64) -> "Predictor":
        """Load a finetune run directory (full model or adapter, merged for serving)."""
        from . import runtime
        from .runinfo import RunInfo
        runtime.setup()
        info = RunInfo.read(run_dir)
        model = info.load_model(merge=True)
        if quantize:
            model = quantize_int8(model)
        from .models import load_tokenizer
        tok = load_tokenizer(str(info.artifact_dir))
        return cls(model, tok, info.label_names, info.max_length, batch_size, device)

    @classmethod
    def from_runs(cls, runs: Mapping[str, str | Path], device: str | None = None, batch_size: int = 64,
                  strategy: str = "mixed") -> "Predictor":
        """Several lora/head_only runs of one base model on a single encoder (see `multi_adapter`):
        `p.predict(texts, adapter="topic")` or `p.predict(texts, adapters=[one name per text])`."""
        from .multi_adapter import AdapterPredictor
        return AdapterPredictor.from_runs(runs, device, batch_size, strategy)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities [n, classes] in input order."""
        texts = _check_texts(texts)
        t0 = time.perf_counter()
        data = TokenData(tokenize(self.tokenizer, texts, self.max_length))
        logits = predict_logits(self.model, data, self.batch_size, self.pad_id, self.device)
        self.last_throughput = len(texts) / max(time.perf_counter() - t0, 1e-9)
        return torch.softmax(logits, dim=-1).numpy()

    def predict(self, texts: Sequence[str] | str) -> list[dict[str, Any]]:
        """Per text: label, confidence, and every class probability."""
        single = isinstance(texts, str)
        probs = self.predict_proba([texts] if single else texts)
        out = []
        for row in probs:
            k = int(row.argmax())
            out.append({"label": self.label_names[k], "confidence": float(row[k]),
                        "probs": {n: float(p) for n, p in zip(self.label_names, row)}})
        return out[0] if single else out


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation of Linear layers (CPU inference only)."""
    from torch.ao.quantization import quantize_dynamic
    return quantize_dynamic(model.cpu(), {nn.Linear}, dtype=torch.qint8)


def _check_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise UserError(f"text {i + 1} is not a string: {t!r}")
    return texts
