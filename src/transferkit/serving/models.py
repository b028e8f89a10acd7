"""The runs a server holds, and one call that predicts a mixed list of (run, text) pairs.

An ONNX export folder (`export --format onnx`) is served like a run of its own, on onnxruntime.
Runs whose method can share a base (`Method.shares_base`: lora, ia3, bitfit, head_only), sentence
classifiers and taggers alike, are served per base on one `AdapterPredictor`, so texts for
different tasks go through the encoder in one pass (`multi_adapter`). Every other run (full,
adapter, prefix) gets its own predictor in the same process; its texts are batched together.
Loading or unloading a shared run rebuilds its base's predictor (about a second for MiniLM) while
batches wait, so a request never sees a half-built model; an item whose run was unloaded while it
waited in the queue comes back as `Gone` (the app answers 404).

A task whose answers are not one batched forward pass (generation: token by token, for as long as the
request asks) uses a run's own predictor through `call`, outside the batches: the set's lock only finds the
predictor, and the predictor's own lock keeps it to one caller at a time, so a long generation holds up
neither the batches of other runs nor loads and unloads of other bases. Its runs of one base whose method
saves a stock adapter (`Task.switches_adapters`, `Method.stock_base`: generation's LoRA and IA3 runs) share
one copy of the base (`inference.switched.SwitchedBase`, one per base and method), each call making its
run's adapter the active one under the base's lock.
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .. import tasks
from ..core.errors import UserError
from ..core.runs import RunInfo
from ..inference import Predictor
from ..inference.loading import run_method
from ..inference.multi_adapter import ADAPTER_NAME, base_key
from ..inference.onnx_backend import is_onnx_export, read_manifest
from ..inference.switched import SwitchedBase


class Gone:
    """The result for an item whose run was unloaded while the item waited in the queue."""

    def __init__(self, name: str) -> None:
        self.name = name


@dataclass
class Served:
    """One run the server answers for."""

    name: str
    run_dir: str
    task: str  # a registered task's name (`tasks.get`)
    method: str
    base: str  # the base model's name (bundled) or path
    labels: list[str]
    max_length: int
    shared: bool  # on its base's shared encoder (mixed batches) or on its own predictor
    loaded_at: float = field(default_factory=time.time)
    key: str = ""  # multi_adapter.base_key: runs with the same key share one encoder
    switched: bool = False  # a named adapter on a base it shares with other runs, one run per call
    backend: str = "torch"  # what runs its forward pass: torch, or its gated onnxruntime graph's variant

    def describe(self) -> dict[str, Any]:
        return {"id": self.name, "object": "model", "created": int(self.loaded_at), "owned_by": "transferkit",
                "task": self.task, "method": self.method, "base": self.base,
                "labels": self.labels, "max_length": self.max_length,
                "shared_base": self.shared or self.switched, "backend": self.backend,
                "loaded_at": int(self.loaded_at)}


class ModelSet:
    """Runs by name; `run(items)` answers (kind, name, text) items in one pass per base."""

    def __init__(self, runs: Mapping[str, str | Path], batch_size: int = 64, device: str | None = None,
                 backend: str = "auto") -> None:
        if backend not in ("auto", "torch"):
            raise UserError(f"backend {backend!r}: a server runs each run on its fastest gated backend (auto) or on "
                            f"PyTorch (torch)")
        self.batch_size, self.device, self.backend = batch_size, device, backend
        self.served: dict[str, Served] = {}
        self._shared: dict[str, Any] = {}  # base -> AdapterPredictor over its shared runs
        self._alone: dict[str, Any] = {}  # name -> Predictor / EntityPredictor
        self._busy: dict[str, threading.Lock] = {}  # name -> the lock of its own predictor (`call`)
        self._switched: dict[str, SwitchedBase] = {}  # base|method -> the runs switched on it (`call`)
        self._lock = threading.Lock()  # loads, unloads and batches, one at a time
        for name, run in runs.items():
            self.load(name, run)

    # ---- loading ------------------------------------------------------------------------------
    def load(self, name: str, run_dir: str | Path) -> Served:
        if not isinstance(name, str) or not ADAPTER_NAME.fullmatch(name):
            raise UserError(f"model name {name!r}: use letters, digits, '-' and '_' (at most 64)")
        if name in self.served:
            raise UserError(f"a model named {name!r} is already loaded; unload it first")
        fast = None  # a predictor on the run's gated onnxruntime graph
        if is_onnx_export(run_dir):  # an ONNX export: its own onnxruntime predictor, never a shared base
            m = read_manifest(run_dir)
            source = m.get("source") if isinstance(m.get("source"), dict) else {}
            entry = Served(name, str(run_dir), m["task"], f"{source.get('method', '?')} (onnx {m['precision']})",
                           str(source.get("model", "?")), list(m["labels"]), m["max_length"], False,
                           backend="onnxruntime (export)")
        else:
            info = RunInfo.read(run_dir)
            method = run_method(info)
            base = base_key(info)  # what decides which runs can share an encoder
            task = tasks.get(info.task)
            # a run with a gated onnxruntime graph answers on it, alone: faster than its share of a base's
            # mixed batches, at the cost of its own copy of the weights (--backend torch keeps one shared base)
            fast = Predictor.on_graph(run_dir, info, self.device, self.batch_size) if self.backend == "auto" else None
            shared = bool(fast is None and method.shares_base and task.shares_base)
            switched = bool(not shared and fast is None and method.stock_base and task.switches_adapters)
            entry = Served(name, str(run_dir), info.task, info.method, info.model_name, list(info.label_names),
                           info.max_length, shared, key=f"{base}|{info.method}" if switched else base,
                           switched=switched, backend=fast.backend if fast is not None else "torch")
        with self._lock:
            if name in self.served:  # another load of the same name finished meanwhile
                raise UserError(f"a model named {name!r} is already loaded; unload it first")
            if entry.shared:
                runs = {n: s.run_dir for n, s in self.served.items() if s.shared and s.key == entry.key}
                self._shared[entry.key] = Predictor.from_runs({**runs, name: run_dir}, device=self.device,
                                                         batch_size=self.batch_size)
            elif entry.switched:
                holder = self._switched.get(entry.key) or SwitchedBase(self.device, self.batch_size)
                with holder.lock:  # a call on the base's other runs finishes first
                    holder.add(name, run_dir)
                self._switched[entry.key] = holder
            else:
                self._alone[name] = fast or Predictor.from_run(
                    run_dir, device=self.device, batch_size=self.batch_size,
                    backend="auto" if is_onnx_export(run_dir) else "torch")  # a run: on_graph found no graph
                self._busy[name] = threading.Lock()
            self.served[name] = entry
        return entry

    def unload(self, name: str) -> None:
        with self._lock:
            entry = self.get(name)
            del self.served[name]
            if entry.switched:
                holder = self._switched[entry.key]
                with holder.lock:
                    if holder.remove(name):
                        del self._switched[entry.key]
                return
            if not entry.shared:  # a `call` still using its predictor finishes with it
                del self._alone[name], self._busy[name]
                return
            runs = {n: s.run_dir for n, s in self.served.items() if s.shared and s.key == entry.key}
            if runs:
                self._shared[entry.key] = Predictor.from_runs(runs, device=self.device, batch_size=self.batch_size)
            else:
                del self._shared[entry.key]

    def get(self, name: str) -> Served:
        if name not in self.served:
            raise KeyError(name)
        return self.served[name]

    def tokenizer(self, name: str) -> Any:
        with self._lock:
            entry = self.get(name)
            if entry.switched:
                return self._switched[entry.key].predictors[name].tokenizer
            return (self._shared[entry.key] if entry.shared else self._alone[name]).tokenizer

    # ---- prediction ---------------------------------------------------------------------------
    def run(self, items: Sequence[tuple[str, str, str]]) -> list[Any]:
        """Per (kind, run name, text): logits [labels] for a classifier, entities ("first") for a tagger.
        The runs of one base go through its shared encoder together, classifiers and taggers alike."""
        with self._lock:  # a load or unload waits for the batch, and the batch for it
            return self._run_locked(items)

    def _run_locked(self, items: Sequence[tuple[str, str, str]]) -> list[Any]:
        out: list[Any] = [None] * len(items)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (_, name, _) in enumerate(items):
            entry = self.served.get(name)
            if entry is None:  # unloaded while the request waited
                out[i] = Gone(name)
                continue
            kind = "shared" if entry.shared else "switched" if entry.switched else "alone"
            groups.setdefault((kind, entry.key if entry.shared else name), []).append(i)
        for (kind, key), idx in groups.items():
            texts = [items[i][2] for i in idx]
            if kind == "shared":
                rows = self._shared[key].outputs(texts, [items[i][1] for i in idx])
            elif kind == "switched":
                holder = self._switched[self.served[key].key]
                with holder.lock:
                    rows = holder.use(key).outputs(texts)
            else:  # a classifier's predictor gives logits, a tagger's entities
                with self._busy[key]:
                    rows = self._alone[key].outputs(texts)
            for i, row in zip(idx, rows):
                out[i] = row.float() if isinstance(row, torch.Tensor) else row
        return out

    def call(self, name: str, fn: Callable[[Any, list[Any]], Any], items: list[Any]) -> Any:
        """`fn(predictor, items)` on run `name`'s own predictor, which nothing else uses meanwhile (its lock);
        `Gone` if the run is not loaded. For tasks whose answers are not the batched forward pass (generation):
        the batches of other runs, loads and unloads go on while `fn` runs."""
        with self._lock:
            entry = self.served.get(name)
            if entry is None:
                return Gone(name)
            if entry.shared:
                raise UserError(f"model {name!r} is served on its base's shared encoder, which answers in batches")
            if entry.switched:
                holder = self._switched[entry.key]
                busy, use = holder.lock, functools.partial(holder.use, name)
            else:
                busy, use = self._busy[name], functools.partial(self._alone.__getitem__, name)
        with busy:
            try:
                predictor = use()
            except KeyError:  # unloaded between the two locks
                return Gone(name)
            return fn(predictor, items)
