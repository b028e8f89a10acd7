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

A mixed batch runs the encoder once for rows of every run; each method gives its own runs' rows their
update (`Method.row_mixer`, as peft keeps `_mixed_batch_forward` in each method's layer): LoRA rows
their own adapter's low-rank update, IA3 rows their own vectors, BitFit rows their own bias
differences, and head_only rows read the plain base. Then the rows of each task are pooled (each head
its own way: mean or [CLS], one or more layers) and go through that task's head. Rows of a run that
cannot mix (`Method.mixes_per_row`, `SharedPart.mixable`: DoRA) run group by group. Each method says
what it adds to the shared encoder (`Method.attach`) and where its head's tensors are, so nothing
here asks for a method by name. Runs must share the base weights (run.json `model_path`); each
text is truncated at its own run's `max_length`.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import tasks
from ..core import runtime
from ..core.errors import UserError
from ..core.folders import check_finite, check_folder, loading
from ..core.registry import METHODS
from ..core.runs import RunInfo
from ..methods.base import SharedPart
from ..modeling.classifier import HEAD_CLASSES, pair_token_types
from ..modeling.resolve import MODELS, build_classifier, load_tokenizer, set_head
from .loading import run_base, run_method


@dataclass
class Task:
    """One run served on the shared base: what its method added there, its head, labels and token limit."""

    name: str
    run_dir: str
    method: str
    label_names: list[str]
    max_length: int
    classifier: Any  # TransferkitForSequenceClassification sharing the base encoder; its head is the task's
    mixable: bool  # can share a batch with other runs' rows (its method's `row_mixer`)
    part: SharedPart  # what its method attached to the shared encoder (`Method.attach`)
    per_token: bool = False  # a token head (NER): logits for every position, not one per text


class MultiAdapterModel(nn.Module):
    """One encoder with what each run's method added to it (LoRA adapters, IA3 vectors, BitFit biases),
    and one head per task."""

    def __init__(self, encoder: nn.Module, tasks: dict[str, Task]) -> None:
        super().__init__()
        self.encoder, self.tasks = encoder, tasks
        self.heads = nn.ModuleDict({n: t.classifier.classifier for n, t in tasks.items()})
        # per method (in first-served order) what gives its runs' rows their own update in a batch
        self.mixers = nn.ModuleDict()
        for method in dict.fromkeys(t.method for t in tasks.values()):
            mixer = METHODS.get(method).row_mixer({n: t.part for n, t in tasks.items() if t.method == method})
            if mixer is not None:
                self.mixers[method] = mixer

    @contextmanager
    def _mixed(self, tasks: Sequence[str]) -> Iterator[None]:
        """Every method's per-row update around one encoder pass whose row i belongs to tasks[i]."""
        with ExitStack() as stack:
            for mixer in self.mixers.values():
                stack.enter_context(mixer.mixed_batch(self.encoder, tasks))
            yield

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                tasks: Sequence[str]) -> dict[str, tuple[list[int], torch.Tensor]]:
        """Per task: (row positions, logits [rows, its labels], or [rows, seq, its labels] for a token
        head) for a batch whose row i belongs to tasks[i]."""
        layers = max(self.tasks[t].classifier.config.pool_layers for t in set(tasks))
        extra = {}
        pair_runs = {t: self.tasks[t].classifier.config.pair_sep_id for t in dict.fromkeys(tasks)}
        if any(sep is not None for sep in pair_runs.values()):
            # a pair run's rows get its token types (second text: 1), every other row zeros
            types = torch.zeros_like(input_ids)
            for t, sep in pair_runs.items():
                if sep is not None:
                    rows = [i for i, x in enumerate(tasks) if x == t]
                    types[rows] = pair_token_types(input_ids[rows], sep)
            extra["token_type_ids"] = types
        with self._mixed(tasks):
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                               output_hidden_states=layers > 1, **extra)
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
            result[t] = (rows, clf.head(pooled))  # eval mode: no dropout
        return result


def load_runs(runs: Mapping[str, str | Path], base_model: str | None = None) -> tuple[MultiAdapterModel, Any]:
    """The shared model and tokenizer for `{task name: run directory}`; every run must share one base
    (`base_model`: the base folder to use instead of what the runs record, see `inference.loading.run_base`)."""
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
            set_head(heads[name].config, info.head, f"{Path(info.run_dir) / 'run.json'} head")
            _load_head(heads[name], info)
    # LoRA layers go in only after every head is built: building a classifier runs transformers'
    # weight initialisation over the encoder's not-yet-loaded modules, which would reset them.
    tuner = None
    served: dict[str, Task] = {}
    for name, info in infos.items():
        method = run_method(info)
        with loading(info.artifact_dir, f"{info.method} adapter"):
            part = method.attach(encoder, tuner, name, Path(info.artifact_dir))
        tuner = part.tuner
        served[name] = Task(name, info.run_dir, info.method, list(info.label_names), info.max_length,
                            heads[name].eval(), method.mixes_per_row and part.mixable, part,
                            tasks.get(info.task).head_kind == "token")
    tokenizer = load_tokenizer(str(first.artifact_dir))
    model = MultiAdapterModel(encoder, served).eval()
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
    return run_base(first, base_model)


def base_key(info: Any) -> str:
    """What identifies a run's base model: a bundled name, else its resolved folder (or hub name);
    runs with the same key can share one encoder."""
    return info.model_name if info.model_name in MODELS else _resolved(info.model_path)


def _resolved(path: str) -> str:
    p = Path(path)
    return str(p.resolve()) if p.exists() else path


def _load_head(clf: nn.Module, info: Any) -> None:
    """Only the head's tensors from the run's artefact (the encoder part is shared)."""
    from safetensors import safe_open
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
