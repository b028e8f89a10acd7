"""How a model becomes an onnxruntime graph: the traced function, the batch it is traced on, and the
transformer fusions.

`write_graph` traces `logits = model(input_ids, attention_mask)` with dynamic batch and sequence axes at
opset OPSET (torch.onnx's TorchScript route: see `exporting.onnx_export` for why). `fused_graph` writes a
second graph for onnxruntime's transformer optimiser: the model traced with eager attention (the pattern
the optimiser recognises; the sdpa trace is left unfused), then its Attention, SkipLayerNormalization,
BiasGelu and EmbedLayerNormalization fusions. The optimiser knows BERT-shaped encoders; a graph in which it
fuses no attention is not kept, and the caller keeps the plain one. Whichever graph is used, the gate
(`onnx_gate`) decides whether it reproduces the PyTorch model.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .onnx_backend import INPUTS, OUTPUT

logger = logging.getLogger(__name__)

OPSET = 17  # LayerNormalization is a single op from 17 on; onnxruntime 1.31 runs up to 23


class LogitsOnly(nn.Module):
    """The traced function: (input_ids, attention_mask) -> logits, nothing else in the graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def write_graph(model: nn.Module, path: Path, example: dict[str, torch.Tensor], per_token: bool) -> None:
    """Trace `model` on `example` (a padded batch) into an ONNX file with dynamic batch/sequence axes."""
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    axes[OUTPUT] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    with warnings.catch_warnings():  # tracer warnings about Python values fixed in the graph: the gate checks
        warnings.simplefilter("ignore")
        torch.onnx.export(LogitsOnly(model).eval(), (example["input_ids"], example["attention_mask"]), str(path),
                          input_names=list(INPUTS), output_names=[OUTPUT], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def tracing_batch(data: Any, pad_id: int) -> dict[str, torch.Tensor]:
    """The longest held-out row twice, the second copy cut to half and padded: a ragged batch, so
    the traced graph keeps the attention-mask path whatever shortcut a model takes for unpadded input."""
    lengths = data.lengths()
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    row = data.collate([longest], pad_id)
    ids, mask = row["input_ids"].repeat(2, 1), row["attention_mask"].repeat(2, 1)  # [2, length]
    half = max(1, ids.shape[1] // 2)
    ids[1, half:], mask[1, half:] = pad_id, 0
    return {"input_ids": ids, "attention_mask": mask}


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Every transformers config inside `model` set to eager attention for the duration (restored after)."""
    configs = {id(c): c for m in model.modules() for c in [getattr(m, "config", None)]
               if c is not None and hasattr(c, "_attn_implementation")}
    before = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = "eager"
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = before[k]


def fused_graph(model: nn.Module, path: Path, example: dict[str, torch.Tensor], per_token: bool) -> int:
    """Write onnxruntime's fused graph of `model` to `path`; returns the number of fused attention ops
    (0: nothing worth keeping was written)."""
    shapes = [(getattr(c, "num_attention_heads", None), getattr(c, "hidden_size", None))
              for m in model.modules() for c in [getattr(m, "config", None)] if c is not None]
    heads, hidden = next(((h, d) for h, d in shapes if h and d), (None, None))  # the encoder's own config
    if not heads or not hidden:
        return 0
    from onnxruntime.transformers.optimizer import optimize_model  # heavy; only when a graph is built
    eager = path.with_name(path.stem + ".eager.onnx")
    try:
        with eager_attention(model):
            write_graph(model, eager, example, per_token)
        with _quiet():
            opt = optimize_model(str(eager), model_type="bert", num_heads=int(heads), hidden_size=int(hidden),
                                 opt_level=1, use_gpu=False)
        fused = opt.get_fused_operator_statistics()
        n = int(fused.get("Attention", 0)) + int(fused.get("MultiHeadAttention", 0))
        if n:
            with _quiet():
                opt.save_model_to_file(str(path))
        logger.debug(f"onnxruntime fusions: {fused}")
        return n
    finally:
        eager.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The optimiser logs every fusion it tries (and every save) under module-named loggers of its own."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
