"""One run's predictor: texts tokenized in one call, sorted by length and padded per batch (dynamic
padding), run under `torch.inference_mode`, returned in input order. A LoRA adapter is merged into the
weights before serving, so prediction costs the same as a plain model."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..data.batches import FeatureData, TokenData, batch_tokens, sorted_batches
from ..data.tokens import tokenize
from ..core.errors import UserError


@torch.inference_mode()
def _batched(module: nn.Module, fn: Any, data: TokenData | FeatureData, batch_size: int, pad_id: int,
             device: torch.device | str) -> torch.Tensor:
    """`fn(batch) -> [batch, k]` over length-sorted batches in eval mode; rows back in input order.

    Inside `distributed.sharded()` each process computes its share of the rows and gets all of them back."""
    from ..training import distributed
    was_training = module.training
    module.eval()
    mine = distributed.my_rows(len(data))
    lengths = data.lengths()
    parts: list[tuple[list[int], torch.Tensor]] = []
    for local in sorted_batches([lengths[i] for i in mine], batch_size, batch_tokens(device)):
        idx = [mine[j] for j in local]
        batch = {k: v.to(device) for k, v in data.collate(idx, pad_id).items() if k != "labels"}
        parts.append((idx, fn(batch).float().cpu()))  # [batch, k]
    module.train(was_training)
    if len(mine) < len(data):  # this process's share: every process's rows, gathered
        rows = distributed.gather_rows(len(data), [i for idx, _ in parts for i in idx],
                                       [r for _, rows in parts for r in rows])
        return torch.stack(rows) if rows else torch.empty(0, 0)
    out = torch.empty(len(data), parts[0][1].shape[-1]) if parts else torch.empty(0, 0)
    for idx, rows in parts:
        out[idx] = rows
    return out


def predict_logits(model: nn.Module, data: TokenData | FeatureData, batch_size: int = 64, pad_id: int = 0,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits [n, classes] in the input order, computed in length-sorted batches."""
    return _batched(model, lambda b: model(**b).logits, data, batch_size, pad_id, device)


def pooled_features(model: nn.Module, data: TokenData, batch_size: int = 64, pad_id: int = 0,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Pooled encoder vectors [n, hidden] of a (frozen) classifier, in input order."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _batched(base, lambda b: base.pool(**b), data, batch_size, pad_id, device)


class LoadedModel:
    """A trained model on its device with its tokenizer and labels: what every task's predictor holds."""

    def __init__(self, model: nn.Module, tokenizer: Any, label_names: list[str], max_length: int = 256,
                 batch_size: int = 64, device: str | torch.device | None = None) -> None:
        check_batch_size(batch_size)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer, self.label_names = tokenizer, list(label_names)
        self.max_length, self.batch_size = max_length, batch_size
        self.pad_id = tokenizer.pad_token_id or 0
        self.last_throughput: float | None = None


class Predictor(LoadedModel):
    """A trained classifier ready to label texts: `Predictor.from_run(run_dir).predict(texts)`."""

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | None = None, quantize: bool = False,
                 batch_size: int = 64, base_model: str | None = None, backend: str = "auto") -> "Predictor":
        """Load a finetune run directory (full model or adapter, merged for serving), or an ONNX export
        folder (`backend` "auto" or "onnxruntime": see `inference.onnx_backend`); `base_model` overrides the
        base folder the run records (see `inference.loading.run_base`)."""
        from ..core import runtime
        from .onnx_backend import check_backend, load_export
        from ..core.runs import RunInfo
        from .loading import load_run_model
        runtime.setup()
        check_batch_size(batch_size)
        if check_backend(backend, run_dir, quantize):
            return load_export(run_dir, batch_size, device)
        info = RunInfo.read(run_dir)
        model = load_run_model(info, merge=True, base_model=base_model)
        if quantize:
            model = quantize_int8(model)
        from .. import tasks
        from ..modeling.resolve import load_tokenizer
        tok = load_tokenizer(str(info.artifact_dir))
        # the run's task decides what predicting means (labels per text, entities per text, ...)
        return tasks.get(info.task).predictor(model, tok, info.label_names, info.max_length, batch_size, device)

    @classmethod
    def from_runs(cls, runs: Mapping[str, str | Path], device: str | None = None, batch_size: int = 64,
                  strategy: str = "mixed", base_model: str | None = None) -> "Predictor":
        """Several lora/ia3/bitfit/head_only runs of one base model on a single encoder (see `multi_adapter`):
        `p.predict(texts, adapter="topic")` or `p.predict(texts, adapters=[one name per text])`."""
        from .adapters import AdapterPredictor
        return AdapterPredictor.from_runs(runs, device, batch_size, strategy, base_model)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities [n, classes] in input order."""
        texts = check_texts(texts)
        t0 = time.perf_counter()
        logits = self._logits(texts)
        self.last_throughput = len(texts) / max(time.perf_counter() - t0, 1e-9)
        return finite_probs(torch.softmax(logits, dim=-1))

    def outputs(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Per text its logits [classes]: what serving batches (the tagger's `outputs` gives entities)."""
        return list(self._logits(texts))

    def _logits(self, texts: Sequence[str]) -> torch.Tensor:
        data = TokenData(tokenize(self.tokenizer, texts, self.max_length))
        return predict_logits(self.model, data, self.batch_size, self.pad_id, self.device)  # [n, classes]

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


def check_texts(texts: Sequence[str]) -> list[str]:
    """Texts as a list; a non-string or an empty text (training refuses those too) names its position."""
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise UserError(f"text {i + 1} is not a string: {t!r}")
        if not t.strip():
            raise UserError(f"text {i + 1} is empty: there is nothing to classify")
    return texts


def check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 1_000_000:
        raise UserError(f"batch size must be an integer in [1, 1000000], got {batch_size!r}")


def finite_probs(probs: torch.Tensor, first: int = 0) -> np.ndarray:
    """Probabilities [n, k] as numpy (rows are texts `first`, `first + 1`, ...); NaN scores (from a model
    whose weights passed loading but overflow on this input) are an error, never output."""
    if not bool(torch.isfinite(probs).all()):
        bad = first + int((~torch.isfinite(probs)).any(-1).nonzero()[0, 0]) + 1
        raise UserError(f"the model produced non-finite scores for text {bad} (its weights overflow on this "
                        f"input); no predictions were written")
    return probs.numpy()
