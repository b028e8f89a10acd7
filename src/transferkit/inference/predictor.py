"""One run's predictor, for every task: inputs checked and encoded by the run's task (`task.encode_inputs`),
the model rows tokenized in one call, sorted by length and padded per batch (dynamic padding), run under
`torch.inference_mode`, and decoded by the task (`task.decode`) into one output row per input, in input
order. A LoRA adapter is merged into the weights before serving, so prediction costs the same as a plain
model. The predictor never asks which task it holds: labels per text, entities per text or anything a new
task decodes come out the same way."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import tasks
from ..core import runtime
from ..core.errors import UserError
from ..core.runs import RunInfo
from ..modeling.forward import check_batch_size, pooled_features, predict_logits, quantize_int8, row_outputs
from ..modeling.resolve import load_tokenizer
from ..tasks.base import Task
from ..tasks.rows import check_texts, finite_probs
from .adapters import AdapterPredictor
from . import run_backend
from .loading import load_run_model, run_task
from .onnx_backend import OnnxModule, check_backend, load_export

__all__ = ["Predictor", "check_batch_size", "check_texts", "finite_probs", "pooled_features", "predict_logits",
           "quantize_int8"]


class Predictor:
    """A trained model ready to predict: `Predictor.from_run(run_dir).predict(inputs)`; what an input is and
    what a prediction holds is the run's task's (a label with confidence per text, entities per text, ...)."""

    def __init__(self, model: nn.Module, tokenizer: Any, label_names: list[str], max_length: int = 256,
                 batch_size: int = 64, device: str | torch.device | None = None,
                 task: str | Task = "classify") -> None:
        check_batch_size(batch_size)
        self.task = tasks.get(task) if isinstance(task, str) else task
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer, self.label_names = tokenizer, list(label_names)
        self.max_length, self.batch_size = max_length, batch_size
        self.pad_id = tokenizer.pad_token_id or 0
        self.last_throughput: float | None = None
        self.backend = "onnxruntime" if isinstance(model, OnnxModule) else "torch"  # what runs the forward pass

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | None = None, quantize: bool = False,
                 batch_size: int = 64, base_model: str | None = None, backend: str = "auto") -> "Predictor":
        """Load a finetune run directory (full model or adapter, merged for serving), or an ONNX export
        folder (see `inference.onnx_backend`). On a CPU a run predicts on its fastest gated backend
        (`inference.run_backend`: an onnxruntime graph cached beside the run, built and checked on first use)
        unless `backend="torch"`, `quantize` or `base_model` is given; `backend="onnxruntime"` requires that
        graph. `base_model` overrides the base folder the run records (see `inference.loading.run_base`)."""
        runtime.setup()
        check_batch_size(batch_size)
        if check_backend(backend, run_dir, quantize):
            module, tok, m = load_export(run_dir, device)
            predictor = cls(module, tok, m["labels"], m["max_length"], batch_size, "cpu", m["task"])
            predictor.manifest = m
            return predictor
        info = RunInfo.read(run_dir)
        task = run_task(info)
        if backend == "onnxruntime" and base_model is not None:
            raise UserError(f"--backend onnxruntime runs the graph cached for {run_dir}, built on the base the run "
                            f"records; leave out --base-model, or use --backend torch")
        if backend != "torch" and not quantize and base_model is None:
            fast = cls.on_graph(run_dir, info, device, batch_size, required=backend == "onnxruntime", task=task)
            if fast is not None:
                return fast
        model = load_run_model(info, merge=True, base_model=base_model)
        if quantize:
            model = quantize_int8(model)
        tok = load_tokenizer(str(info.artifact_dir))
        return cls(model, tok, info.label_names, info.max_length, batch_size, device, task)

    @classmethod
    def on_graph(cls, run_dir: str | Path, info: RunInfo, device: str | None = None, batch_size: int = 64,
                 required: bool = False, task: Task | None = None) -> "Predictor | None":
        """The run on its cached gated onnxruntime graph (`inference.run_backend`), or None where PyTorch is its
        backend or the device is a GPU (`required`: an error instead of None)."""
        on_cpu = device == "cpu" or (device is None and (required or not torch.cuda.is_available()))
        if not on_cpu:
            if required:
                raise UserError(f"{run_dir}: its onnxruntime graph runs on the CPU, not on {device or 'cuda'}")
            return None
        task = task or run_task(info)
        module = run_backend.load(run_dir, info, batch_size, required=required, task=task)
        if module is None:
            return None
        predictor = cls(module, load_tokenizer(str(info.artifact_dir)), info.label_names, info.max_length,
                        batch_size, "cpu", task)
        predictor.backend = module.variant
        return predictor

    @classmethod
    def from_runs(cls, runs: Mapping[str, str | Path], device: str | None = None, batch_size: int = 64,
                  strategy: str = "mixed", base_model: str | None = None) -> Any:
        """Several lora/ia3/bitfit/head_only runs of one base model on a single encoder (see `multi_adapter`):
        `p.predict(texts, adapter="topic")` or `p.predict(texts, adapters=[one name per text])`."""
        return AdapterPredictor.from_runs(runs, device, batch_size, strategy, base_model)

    def forward_rows(self, items: list[Any]) -> tuple[Any, list[torch.Tensor]]:
        """(the task's encoding of `items`, the model's logits for each of its rows)."""
        encoded = self.task.encode_inputs(self.tokenizer, items, self.max_length)
        return encoded, row_outputs(self.model, encoded.rows, self.batch_size, self.pad_id, self.device)

    def outputs(self, inputs: Sequence[Any]) -> list[Any]:
        """Per input, what a server answers from: the task's `serving_results` (a classifier's logits, a
        tagger's entities)."""
        encoded, rows = self.forward_rows(list(inputs))
        return self.task.serving_results(rows, encoded, self.label_names)

    def predict(self, inputs: Sequence[Any] | Any, **options: Any) -> Any:
        """Per input, the task's output row (for one input given alone, that row); `options` are the task's
        decode options (e.g. ner's `aggregation_strategy`)."""
        single = self.task.is_single(inputs)
        items = self.task.check_inputs([inputs] if single else inputs)
        options = self.task.check_decode_options(options)
        t0 = time.perf_counter()
        out = self.task.predict_rows(self, items, options)
        self.last_throughput = len(items) / max(time.perf_counter() - t0, 1e-9)
        return out[0] if single else out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities [n, classes] in input order (runs with one output vector per text)."""
        if not self.task.one_label_per_example:
            raise UserError(f"predict_proba gives class probabilities of runs with one label per text; this is a "
                            f"{self.task.name} run: use predict()")
        texts = self.task.check_inputs(texts)
        t0 = time.perf_counter()
        _, rows = self.forward_rows(texts)
        if any(r.dim() != 1 for r in rows) or len(rows) != len(texts):
            raise UserError(f"predict_proba is for runs with one label per text; this is a {self.task.name} run: "
                            f"use predict()")
        self.last_throughput = len(texts) / max(time.perf_counter() - t0, 1e-9)
        if not rows:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        return finite_probs(torch.softmax(torch.stack(rows), dim=-1))
