"""Running an ONNX export (`transferkit export RUN OUT --format onnx`) with onnxruntime.

An export folder holds `model.onnx` (inputs input_ids and attention_mask [batch, sequence], output
logits [batch, labels] or [batch, sequence, tags]), the tokenizer, and `manifest.json` (task, labels,
token limit, precision, the checks the export passed). `OnnxModule` wraps an onnxruntime session
as a torch module whose forward returns `.logits`, so the task predictors (labels per text,
entities per sentence), evaluation on a split and serving run an export through the same code as a
PyTorch model: the export route differs from the PyTorch one in the forward pass alone.

onnxruntime is imported when an export is loaded, not before: the PyTorch paths never need it. A run
folder's own cached graph (`run_backend`) runs through the same module.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import UserError
from ..core.folders import loading, read_json_object
from ..modeling.resolve import load_tokenizer

MANIFEST = "manifest.json"
FORMAT = "transferkit-onnx"
FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "logits"
PRECISIONS = ("fp32", "int8")
BACKENDS = ("auto", "torch", "onnxruntime")


def is_onnx_export(folder: str | Path) -> bool:
    """True for a folder holding an export manifest (read and checked by `read_manifest`)."""
    return (Path(folder) / MANIFEST).is_file() and not (Path(folder) / "run.json").exists()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The export's manifest with every field the loader relies on checked; else one line naming the file."""
    from .. import tasks
    path = Path(folder) / MANIFEST
    m = read_json_object(path, "ONNX export manifest", strict=True)

    def bad(why: str) -> UserError:
        return UserError(f"{path}: {why} (not a transferkit ONNX export, or damaged?)")
    if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
        raise bad(f"format {m.get('format')!r} version {m.get('format_version')!r}, expected {FORMAT!r} "
                  f"version {FORMAT_VERSION}")
    labels = m.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels) \
            or len(set(labels)) != len(labels):
        raise bad("'labels' must be a non-empty list of distinct names")
    n = m.get("max_length")
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 1_000_000:
        raise bad(f"'max_length' must be an integer in [2, 1000000], got {n!r}")
    if m.get("precision") not in PRECISIONS:
        raise bad(f"'precision' must be one of {', '.join(PRECISIONS)}, got {m.get('precision')!r}")
    if m.get("model_file") != MODEL_FILE:
        raise bad(f"'model_file' must be {MODEL_FILE!r}, got {m.get('model_file')!r}")
    try:
        tasks.get(m.get("task"))
    except UserError as e:
        raise bad(str(e)) from None
    if not (Path(folder) / MODEL_FILE).is_file():
        raise UserError(f"{Path(folder) / MODEL_FILE}: missing; the export folder is incomplete")
    return m


def session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session on `path` with the process's thread count; a file onnxruntime
    cannot load is one line naming it."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        # the same reason as torch's OpenMP setting (transferkit/__init__.py): spinning threads fight
        # any other process for a shared core
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with loading(path, "ONNX model"):
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    if sorted(names) != sorted(INPUTS) or OUTPUT not in outs:
        raise UserError(f"{path}: the graph takes {names} and gives {outs}; expected inputs {list(INPUTS)} "
                        f"and output {OUTPUT!r}")
    return sess


class OnnxModule(nn.Module):
    """An onnxruntime session behind a torch module's call: `module(input_ids=, attention_mask=).logits`.

    It holds no parameters; `.to()`, `.eval()` and `.train()` change nothing. Inputs on any
    device are copied to host memory; logits come back as a CPU float tensor."""

    def __init__(self, sess: Any, label_names: list[str], head_kind: str) -> None:
        super().__init__()
        self.session = sess
        self.config = SimpleNamespace(id2label=dict(enumerate(label_names)),
                                      label2id={n: i for i, n in enumerate(label_names)},
                                      num_labels=len(label_names), head_kind=head_kind)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: Any) -> SimpleNamespace:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        feeds = {"input_ids": input_ids.detach().cpu().numpy().astype(np.int64, copy=False),
                 "attention_mask": attention_mask.detach().cpu().numpy().astype(np.int64, copy=False)}
        (logits,) = self.session.run([OUTPUT], feeds)  # [batch, labels] or [batch, sequence, tags]
        return SimpleNamespace(logits=torch.from_numpy(logits))


def head_kind(task_name: str) -> str:
    from .. import tasks
    return tasks.get(task_name).head_kind


def load_export(folder: str | Path, device: str | None = None) -> tuple[OnnxModule, Any, dict[str, Any]]:
    """(the graph as a module, its tokenizer, its checked manifest): what a Predictor over an ONNX export holds."""
    if device not in (None, "cpu"):
        raise UserError(f"{folder}: an ONNX export runs on the CPU through onnxruntime here, not on {device!r}")
    m = read_manifest(folder)
    module = OnnxModule(session(Path(folder) / MODEL_FILE), m["labels"], head_kind(m["task"]))
    return module, load_tokenizer(str(folder)), m


def check_backend(backend: str, folder: str | Path, quantize: bool = False) -> bool:
    """Whether `folder` is an ONNX export that runs through onnxruntime under `backend` (auto: when it is
    one; a run folder runs on its cached graph or PyTorch, `inference.run_backend`); a backend that does not
    fit the folder is one line saying what to do instead."""
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r}: use one of {', '.join(BACKENDS)}")
    onnx = is_onnx_export(folder)
    if backend == "torch" and onnx:
        raise UserError(f"{folder} is an ONNX export; run it with --backend onnxruntime (or auto)")
    if onnx and quantize:
        raise UserError(f"{folder}: an ONNX export's precision is fixed when it is written; "
                        f"export with --int8 instead of predicting with it")
    if backend == "onnxruntime" and quantize:
        raise UserError("--int8 quantises the PyTorch model; use it with --backend torch (or auto)")
    return onnx
