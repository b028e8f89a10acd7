"""Many task models on one base encoder: load the encoder once, switch adapters per call, serve mixed batches.

`Predictor.from_runs({"sentiment": run_a, "topic": run_b})` (an `inference.AdapterPredictor`) loads
the base encoder once, adds each LoRA run's low-rank weights to it as a named peft adapter, and
keeps each run's task head (its own label set, any number of labels) beside it.
`predict(texts, adapter="topic")` switches adapters without reloading anything;
`predict(texts, adapters=[one name per text])` serves a mixed batch.

Why not `PeftModel.load_adapter` alone: peft keeps the task head in `modules_to_save`, a copy of
one head module per adapter, so every adapter's head must have the same shape; tasks with different
label counts cannot share it. The LoRA layers are therefore injected into the shared encoder with
peft's `LoraModel` (one adapter per run), and the heads stay outside peft: one small
`TransferkitForSequenceClassification` per run, all holding the same encoder module.

A mixed batch runs the encoder once with peft's per-row `adapter_names`: each base matmul runs
once for the whole batch and each LoRA layer adds its low-rank update to its own rows. Then the
rows of each task are pooled (each head its own way: mean or [CLS], one or more layers) and go
through that task's head. head_only rows read the plain base (peft's "__base__"). IA3 rows also
read the base, rescaled by their own vectors through forward hooks written here, because peft's
IA3 layers have no per-row mode; BitFit rows read the base plus their own bias differences the same
way (exact: a module's output with bias b + d is its output with b, plus d). Adapters peft cannot mix in one batch (DoRA) run group by group
with their adapter switched on. Each method says what it adds to the shared encoder (`Method.attach`:
LoRA's peft adapter, IA3's vectors, nothing for head_only) and where its head's tensors are, so
nothing here asks for a method by name. Runs must share the base weights (run.json `model_path`); each
text is truncated at its own run's `max_length`.
"""
from __future__ import annotations

import re

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError

from ..methods.base import PEFT_BASE as BASE  # peft's name for "no adapter" in a mixed batch


@dataclass
class Task:
    """One run served on the shared base: its adapter (or none), head, labels and token limit."""

    name: str
    run_dir: str
    method: str
    label_names: list[str]
    max_length: int
    classifier: Any  # TransferkitForSequenceClassification sharing the base encoder; its head is the task's
    mixable: bool  # can share a batch with other adapters (peft mixed-batch forward)
    adapter: str = BASE  # the peft adapter its rows use in the encoder (BASE: the plain encoder)
    per_token: bool = False  # a token head (NER): logits for every position, not one per text
    # encoder module path -> (scales the input (feed-forward) rather than the output, vector [features])
    scales: dict[str, tuple[bool, torch.Tensor]] | None = None
    offsets: dict[str, torch.Tensor] | None = None  # encoder module path -> bias difference [features] (BitFit)


class MultiAdapterModel(nn.Module):
    """One encoder with N named LoRA adapters (and IA3 vectors, BitFit biases), and one head per task."""

    def __init__(self, encoder: nn.Module, tuner: Any, tasks: dict[str, Task]) -> None:
        super().__init__()
        self.encoder, self.tuner, self.tasks = encoder, tuner, tasks
        self._stack: Any = None  # the stacked LoRA weights (`_stacks`), built on the first mixed batch
        self.heads = nn.ModuleDict({n: t.classifier.classifier for n, t in tasks.items()})
        # (IA)^3 vectors as buffers so .to(device) moves them; key "<task>|<module path>"
        self.ia3: dict[str, tuple[str, bool]] = {}
        for n, t in tasks.items():
            for path, (feedforward, vec) in (t.scales or {}).items():
                key = f"ia3_{len(self.ia3)}"
                self.register_buffer(key, vec, persistent=False)
                self.ia3[f"{n}|{path}"] = (key, feedforward)
        self.bias: dict[str, str] = {}  # BitFit bias differences, "<task>|<module path>" -> buffer name
        for n, t in tasks.items():
            for path, vec in (t.offsets or {}).items():
                key = f"bias_{len(self.bias)}"
                self.register_buffer(key, vec, persistent=False)
                self.bias[f"{n}|{path}"] = key

    @contextmanager
    def _row_updates(self, tasks: Sequence[str]) -> Iterator[None]:
        """Give each row its own task's (IA)^3 scales and BitFit bias offsets (peft has no per-row mode
        for either): a forward hook on every module some task in the batch changes. A row belongs to
        one task, so the scale of one and the offset of another never meet in the same row."""
        scales: dict[str, list[tuple[list[int], torch.Tensor, bool]]] = {}
        offsets: dict[str, list[tuple[list[int], torch.Tensor]]] = {}
        for t in dict.fromkeys(tasks):
            task = self.tasks[t]
            if not (task.scales or task.offsets):
                continue
            rows = [i for i, x in enumerate(tasks) if x == t]
            for path in task.scales or {}:
                key, feedforward = self.ia3[f"{t}|{path}"]
                scales.setdefault(path, []).append((rows, getattr(self, key), feedforward))
            for path in task.offsets or {}:
                offsets.setdefault(path, []).append((rows, getattr(self, self.bias[f"{t}|{path}"])))
        handles = []
        for path, entries in scales.items():
            feedforward = entries[0][2]
            scale = torch.ones(len(tasks), 1, entries[0][1].numel(), device=entries[0][1].device)  # [batch, 1, features]
            for rows, vec, _ in entries:
                scale[rows] = vec
            module = self.encoder.get_submodule(path)
            if feedforward:  # scales the layer's input, as peft's feed-forward IA3 layers do
                handles.append(module.register_forward_pre_hook(lambda m, args, s=scale: (args[0] * s, *args[1:])))
            else:  # scales the layer's output (bias included), as peft's IA3 layers do
                handles.append(module.register_forward_hook(lambda m, args, out, s=scale: out * s))
        for path, entries in offsets.items():
            shift = torch.zeros(len(tasks), entries[0][1].numel(), device=entries[0][1].device)  # [batch, features]
            for rows, vec in entries:
                shift[rows] = vec
            module = self.encoder.get_submodule(path)
            # an output is [batch, features] (a pooler) or [batch, seq, features]
            handles.append(module.register_forward_hook(
                lambda m, args, out, s=shift: out + s.view(s.shape[0], *[1] * (out.dim() - 2), s.shape[1])))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def _adapters(self, names: list[str]) -> Iterator[None]:
        """Route each row through its adapter: one active adapter, none, or peft's per-row mix."""
        uniq = set(names)
        if self.tuner is None:
            yield
        elif uniq == {BASE}:
            self.tuner.disable_adapter_layers()
            try:
                yield
            finally:
                self.tuner.enable_adapter_layers()
        elif len(uniq) == 1:
            self.tuner.set_adapter(names[0], inference_mode=True)
            yield
        elif self._stacks() is not None:  # every LoRA update of the batch in two batched matmuls per layer
            with self._stacked_lora(names):
                yield
        else:  # the mechanism PeftModel.forward(adapter_names=...) uses
            with self.tuner._enable_peft_forward_hooks(adapter_names=names):
                yield

    def _stacks(self) -> Any:
        """Per LoRA layer, every mixable adapter's A and B stacked (rank padded with zeros, scaling folded
        into B, slot 0 all zeros for rows without one): (adapter -> slot, [(layer, A [n+1, r, in], B [n+1, out, r])]).
        None when some layer is not a plain LoRA Linear (peft's own per-row loop serves those).

        peft's mixed batch (`adapter_names`) loops over the adapters in every layer: index the rows,
        two small matmuls, scatter back; 8 adapters cost 8 of each per layer. Gathering each row's A and
        B and running `bmm` twice costs the same for any number of adapters (the BGMV kernel of
        punica and S-LoRA, here in plain torch)."""
        if self._stack is not None:
            return self._stack or None
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.lora import LoraLayer
        order = sorted({t.adapter for t in self.tasks.values() if t.mixable and t.adapter != BASE})
        slot = {a: i + 1 for i, a in enumerate(order)}
        layers = []
        for m in self.encoder.modules():
            if not isinstance(m, LoraLayer):
                continue
            here = [a for a in order if a in m.lora_A]
            if not here:
                continue
            if not isinstance(m, LoraLinear) or any(m.lora_B[a].bias is not None or a in m.lora_variant for a in here):
                self._stack = ()  # checked once: this model takes peft's path
                return None
            ref = m.lora_A[here[0]].weight
            r = max(m.lora_A[a].weight.shape[0] for a in here)
            A = ref.new_zeros(len(order) + 1, r, ref.shape[1])  # [slots, r, in]
            B = ref.new_zeros(len(order) + 1, m.lora_B[here[0]].weight.shape[0], r)  # [slots, out, r]
            with torch.no_grad():
                for a in here:
                    ra = m.lora_A[a].weight.shape[0]
                    A[slot[a], :ra] = m.lora_A[a].weight
                    B[slot[a], :, :ra] = m.lora_B[a].weight * m.scaling[a]
            layers.append((m, A, B))
        self._stack = (slot, layers)
        return self._stack

    @contextmanager
    def _stacked_lora(self, names: list[str]) -> Iterator[None]:
        """peft's layers compute the base alone; a hook on each adds every row's own LoRA update."""
        slot, layers = self._stack
        idx = torch.tensor([slot.get(n, 0) for n in names], device=layers[0][1].device if layers else None)

        def add(A: torch.Tensor, B: torch.Tensor) -> Any:
            a_rows, b_rows = A[idx].transpose(1, 2), B[idx].transpose(1, 2)  # [batch, in, r], [batch, r, out]

            def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
                x = args[0].to(A.dtype)
                x3 = x if x.dim() == 3 else x.unsqueeze(1)  # [batch, seq, in]
                delta = torch.bmm(torch.bmm(x3, a_rows), b_rows)  # [batch, seq, out]
                return out + (delta if x.dim() == 3 else delta.squeeze(1)).to(out.dtype)
            return hook
        handles = [m.register_forward_hook(add(A, B)) for m, A, B in layers]
        self.tuner.disable_adapter_layers()
        try:
            yield
        finally:
            self.tuner.enable_adapter_layers()
            for h in handles:
                h.remove()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                tasks: Sequence[str]) -> dict[str, tuple[list[int], torch.Tensor]]:
        """Per task: (row positions, logits [rows, its labels], or [rows, seq, its labels] for a token
        head) for a batch whose row i belongs to tasks[i]."""
        names = [self.tasks[t].adapter for t in tasks]
        layers = max(self.tasks[t].classifier.config.pool_layers for t in set(tasks))
        with self._adapters(names), self._row_updates(tasks):
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                               output_hidden_states=layers > 1)
        result = {}
        for t in dict.fromkeys(tasks):  # first-seen order
            rows = [i for i, x in enumerate(tasks) if x == t]
            clf = self.tasks[t].classifier
            if self.tasks[t].per_token:  # eval mode: no dropout
                result[t] = (rows, clf.classifier(out.last_hidden_state[rows]))  # [rows, seq, labels]
                continue
            k = clf.config.pool_layers
            # same layer choice as TransferkitForSequenceClassification.pool: last layer first
            hs = [out.last_hidden_state] if k == 1 else list(out.hidden_states[-k:])[::-1]  # each [batch, seq, hidden]
            mask = attention_mask[rows]
            pooled = torch.cat([clf._pool_one(h[rows], mask) for h in hs], dim=-1)  # [rows, hidden * k]
            result[t] = (rows, clf.classifier(pooled))  # eval mode: no dropout
        return result


def load_runs(runs: Mapping[str, str | Path], base_model: str | None = None) -> tuple[MultiAdapterModel, Any]:
    """The shared model and tokenizer for `{task name: run directory}`; every run must share one base
    (`base_model`: the base folder to use instead of what the runs record, see `inference.loading.run_base`)."""
    from ..core import runtime
    from ..modeling.classifier import HEAD_CLASSES
    from ..core.folders import check_finite, check_folder, loading
    from ..modeling.resolve import build_classifier, load_tokenizer
    from ..core.runs import RunInfo
    from .loading import run_method
    runtime.setup()
    if not runs:
        raise UserError("no runs given: pass at least one NAME=RUN_DIR")
    infos = {}
    for name, run_dir in runs.items():
        # peft uses adapter names inside module names, where '.' is a path separator
        if not isinstance(name, str) or not ADAPTER_NAME.fullmatch(name):
            raise UserError(f"adapter name {name!r}: use letters, digits, '-' and '_' (at most 64, no '.')")
        infos[name] = RunInfo.read(run_dir)
    first = next(iter(infos.values()))
    from .. import tasks
    for name, info in infos.items():
        if not tasks.get(info.task).shares_base:
            raise UserError(f"adapter {name!r} ({info.run_dir}): {info.task} runs cannot share a base model yet; "
                            f"predict with it alone")
        method = run_method(info)
        if not method.shares_base:
            from ..core.registry import METHODS
            can = [m for m in METHODS.names() if METHODS.get(m).shares_base]
            raise UserError(f"adapter {name!r} ({info.run_dir}): method {info.method!r} cannot share a base model "
                            f"(only {', '.join(can[:-1])} and {can[-1]} runs can; serve it alone with "
                            f"Predictor.from_run)")
        check_folder(info.artifact_dir, method.artifact_files, what=f"{info.method} artefact")
    resolved = _same_base(infos, base_model)
    with loading(resolved.path, "base model"):
        encoder = build_classifier(resolved, first.label_names, first.pooling, first.classifier_dropout).encoder
    encoder.eval()

    heads = {}
    for name, info in infos.items():
        Classifier = HEAD_CLASSES[tasks.get(info.task).head_kind]
        heads[name] = Classifier.with_encoder(encoder, len(info.label_names), info.pooling, info.classifier_dropout,
                                              dict(enumerate(info.label_names)), info.head_hidden, info.pool_layers)
        with loading(info.artifact_dir, "task head"):
            _load_head(heads[name], info)
    # LoRA layers go in only after every head is built: building a classifier runs transformers'
    # weight initialisation over the encoder's not-yet-loaded modules, which would reset them.
    tuner = None
    served: dict[str, Task] = {}
    for name, info in infos.items():
        with loading(info.artifact_dir, f"{info.method} adapter"):
            part = run_method(info).attach(encoder, tuner, name, Path(info.artifact_dir))
        tuner = part.tuner
        served[name] = Task(name, info.run_dir, info.method, list(info.label_names), info.max_length,
                            heads[name].eval(), part.mixable, part.adapter, tasks.get(info.task).head_kind == "token",
                            part.scales, part.offsets)
    tokenizer = load_tokenizer(str(first.artifact_dir))
    model = MultiAdapterModel(encoder, tuner, served).eval()
    check_finite(model, ", ".join(str(i.artifact_dir) for i in infos.values()))
    return model, tokenizer


ADAPTER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _same_base(infos: Mapping[str, Any], base_model: str | None) -> Any:
    """The common base model (a ResolvedModel): the runs must record the same base (checked before any
    `base_model` override, which then says where that one base is); a clear error naming the one that differs."""
    first_name, first = next(iter(infos.items()))
    for name, info in infos.items():
        if base_key(info) != base_key(first):
            raise UserError(f"adapter {name!r} ({info.run_dir}) was trained on {info.model_path}, but adapter "
                            f"{first_name!r} on {first.model_path}: runs served together must share one base model")
    from .loading import run_base
    return run_base(first, base_model)


def base_key(info: Any) -> str:
    """What identifies a run's base model: a bundled name, else its resolved folder (or hub name);
    runs with the same key can share one encoder."""
    from ..modeling.resolve import MODELS
    return info.model_name if info.model_name in MODELS else _resolved(info.model_path)


def _resolved(path: str) -> str:
    p = Path(path)
    return str(p.resolve()) if p.exists() else path


def _load_head(clf: nn.Module, info: Any) -> None:
    """Only the head's tensors from the run's artefact (the encoder part is shared)."""
    from safetensors import safe_open
    from .loading import run_method
    art, method = Path(info.artifact_dir), run_method(info)
    path, prefixes = art / method.head_file, (method.head_prefix,)
    if not path.is_file():
        raise UserError(f"{info.run_dir}: {path.name} not found in {art}")
    state = {}
    with safe_open(str(path), "pt") as f:
        for k in f.keys():  # noqa: SIM118  (safe_open is not a dict)
            for p in prefixes:
                if k.startswith(p):
                    state[k[len(p):]] = f.get_tensor(k)
    try:
        clf.classifier.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{info.run_dir}: head weights do not fit its run.json ({str(e).splitlines()[0]})") from None
