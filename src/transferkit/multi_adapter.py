"""Many task models on one base encoder: load the encoder once, switch adapters per call, serve mixed batches.

`AdapterPredictor.from_runs({"sentiment": run_a, "topic": run_b})` loads the base encoder once, adds
each LoRA run's low-rank weights to it as a named peft adapter, and keeps each run's task head (its
own label set, any number of labels) beside it. `predict(texts, adapter="topic")` switches adapters
without reloading anything; `predict(texts, adapters=[one name per text])` serves a mixed batch.

Why not `PeftModel.load_adapter` alone: peft keeps the task head in `modules_to_save`, a copy of
one head module per adapter, so every adapter's head must have the same shape; tasks with different
label counts cannot share it. The LoRA layers are therefore injected into the shared encoder with
peft's `LoraModel` (one adapter per run), and the heads stay outside peft: one small
`TransferkitForSequenceClassification` per run, all holding the same encoder module.

A mixed batch runs the encoder once with peft's per-row `adapter_names`: each base matmul runs
once for the whole batch and each LoRA layer adds its low-rank update to its own rows. Then the
rows of each task are pooled and go through that task's head. head_only runs need no adapter: their
rows read the plain base (peft's "__base__"). Adapters peft cannot mix in one batch (DoRA) are run
group by group with the adapter switched on for the group.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .inference import Predictor, _check_texts

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
MIXED, GROUPED = "mixed", "grouped"


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

    @property
    def adapter(self) -> str:
        """The peft adapter name its rows use in the encoder."""
        return BASE if self.method == "head_only" else self.name


class MultiAdapterModel(nn.Module):
    """One encoder with N named LoRA adapters, and one head per task."""

    def __init__(self, encoder: nn.Module, tuner: Any, tasks: dict[str, Task]) -> None:
        super().__init__()
        self.encoder, self.tuner, self.tasks = encoder, tuner, tasks
        self.heads = nn.ModuleDict({n: t.classifier.classifier for n, t in tasks.items()})

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
        else:  # the mechanism PeftModel.forward(adapter_names=...) uses
            with self.tuner._enable_peft_forward_hooks(adapter_names=names):
                yield

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                tasks: Sequence[str]) -> dict[str, tuple[list[int], torch.Tensor]]:
        """Per task: (row positions, logits [rows, its labels]) for a batch whose row i belongs to tasks[i]."""
        names = [self.tasks[t].adapter for t in tasks]
        layers = max(self.tasks[t].classifier.config.pool_layers for t in set(tasks))
        with self._adapters(names):
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                               output_hidden_states=layers > 1)
        result = {}
        for t in dict.fromkeys(tasks):  # first-seen order
            rows = [i for i, x in enumerate(tasks) if x == t]
            clf = self.tasks[t].classifier
            k = clf.config.pool_layers
            # same layer choice as TransferkitForSequenceClassification.pool: last layer first
            hs = [out.last_hidden_state] if k == 1 else list(out.hidden_states[-k:])[::-1]  # each [batch, seq, hidden]
            mask = attention_mask[rows]
            pooled = torch.cat([clf._pool_one(h[rows], mask) for h in hs], dim=-1)  # [rows, hidden * k]
            result[t] = (rows, clf.classifier(pooled))  # eval mode: no dropout
        return result


def load_runs(runs: Mapping[str, str | Path]) -> tuple[MultiAdapterModel, Any]:
    """The shared model and tokenizer for `{task name: run directory}`; every run must share one base."""
    from . import methods, runtime  # noqa: F401  (methods: registers them)
    from .modeling import TransferkitForSequenceClassification as Classifier
    from .models import ResolvedModel, build_classifier, load_tokenizer
    from .runinfo import RunInfo
    runtime.setup()
    if not runs:
        raise UserError("no runs given: pass at least one NAME=RUN_DIR")
    infos = {}
    for name, run_dir in runs.items():
        if not name or not str(name).replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise UserError(f"adapter name {name!r}: use letters, digits, '-', '_' or '.'")
        infos[str(name)] = RunInfo.read(run_dir)
    first = next(iter(infos.values()))
    base_path = _same_base(infos)
    for name, info in infos.items():
        if info.method not in ("lora", "head_only"):
            raise UserError(f"adapter {name!r} ({info.run_dir}): method {info.method!r} cannot share a base model "
                            f"(only lora and head_only runs can; serve it alone with Predictor.from_run)")
    resolved = ResolvedModel(first.model_name, base_path, first.pooling)
    encoder = build_classifier(resolved, first.label_names, first.pooling, first.classifier_dropout).encoder
    encoder.eval()

    heads = {}
    for name, info in infos.items():
        heads[name] = Classifier.with_encoder(encoder, len(info.label_names), info.pooling, info.classifier_dropout,
                                              dict(enumerate(info.label_names)), info.head_hidden, info.pool_layers)
        _load_head(heads[name], info)
    # LoRA layers go in only after every head is built: building a classifier runs transformers'
    # weight initialisation over the encoder's not-yet-loaded modules, which would reset them.
    tuner = None
    tasks: dict[str, Task] = {}
    for name, info in infos.items():
        if info.method == "lora":
            tuner = _add_lora(tuner, encoder, name, info.artifact_dir)
        mixable = info.method == "head_only" or not tuner.peft_config[name].use_dora
        tasks[name] = Task(name, info.run_dir, info.method, list(info.label_names), info.max_length,
                           heads[name].eval(), mixable)
    tokenizer = load_tokenizer(str(first.artifact_dir))
    return MultiAdapterModel(encoder, tuner, tasks).eval(), tokenizer


def _same_base(infos: Mapping[str, Any]) -> str:
    """The common base model path; a clear error naming the run that differs."""
    first_name, first = next(iter(infos.items()))
    key = _resolved(first.model_path)
    for name, info in infos.items():
        if _resolved(info.model_path) != key:
            raise UserError(f"adapter {name!r} ({info.run_dir}) was trained on {info.model_path}, but adapter "
                            f"{first_name!r} on {first.model_path}: runs served together must share one base model")
    return first.model_path


def _resolved(path: str) -> str:
    p = Path(path)
    return str(p.resolve()) if p.exists() else path


class _Holder(nn.Module):
    """Puts the encoder at the path it has inside the classifier ("encoder.<...>"), so the run's
    target_modules (names, suffixes or regexes written against the classifier) match the same layers."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder


def _add_lora(tuner: Any, encoder: nn.Module, name: str, art_dir: Path) -> Any:
    """Inject the run's LoRA layers into the encoder as adapter `name` and load their weights."""
    from peft import LoraConfig, LoraModel, set_peft_model_state_dict
    from safetensors.torch import load_file
    cfg = LoraConfig.from_pretrained(str(art_dir))
    cfg.modules_to_save, cfg.task_type, cfg.inference_mode = None, None, True  # the head stays outside peft
    if tuner is None:
        tuner = LoraModel(_Holder(encoder), cfg, name)
    else:
        tuner.peft_config[name] = cfg
        tuner.inject_adapter(tuner.model, name)
    # Saved keys are relative to PeftModel(classifier): "base_model.model.encoder.<encoder path>";
    # the tuner's own names are "model.encoder.<encoder path>".
    prefix = "base_model.model."
    saved = load_file(str(art_dir / "adapter_model.safetensors"))
    weights = {"model." + k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix + "encoder.")}
    result = set_peft_model_state_dict(tuner, weights, adapter_name=name)
    wanted = {n for n, _ in tuner.named_parameters() if f".{name}." in n and "lora_" in n}
    missing = wanted & set(result.missing_keys)
    if result.unexpected_keys or missing or not weights:
        raise UserError(f"{art_dir}: LoRA weights do not match the base encoder "
                        f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected)")
    return tuner


def _load_head(clf: nn.Module, info: Any) -> None:
    """Only the head's tensors from the run's artefact (the encoder part is shared)."""
    from safetensors import safe_open
    art = Path(info.artifact_dir)
    if info.method == "lora":
        path, prefixes = art / "adapter_model.safetensors", ("base_model.model.classifier.",)
    else:
        path, prefixes = art / "model.safetensors", ("classifier.",)
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


class AdapterPredictor(Predictor):
    """A Predictor over several runs sharing one base: `predict(texts, adapter=...)` or `adapters=[...]`.

    Without `adapter`/`adapters` a call uses the active adapter (the first, or the last `set_adapter`),
    so code written for a one-run Predictor (evaluation, serving) works unchanged.
    """

    def __init__(self, model: MultiAdapterModel, tokenizer: Any, batch_size: int = 64,
                 device: str | torch.device | None = None, strategy: str = MIXED) -> None:
        if strategy not in (MIXED, GROUPED):
            raise UserError(f"strategy {strategy!r}: use {MIXED!r} or {GROUPED!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer, self.batch_size, self.strategy = tokenizer, batch_size, strategy
        self.pad_id = tokenizer.pad_token_id or 0
        self.last_throughput: float | None = None
        self.active = next(iter(model.tasks))

    @classmethod
    def from_runs(cls, runs: Mapping[str, str | Path], device: str | None = None, batch_size: int = 64,
                  strategy: str = MIXED) -> "AdapterPredictor":
        """Load `{name: run_dir}` (lora and head_only runs of one base model) on a single encoder."""
        model, tokenizer = load_runs(runs)
        return cls(model, tokenizer, batch_size, device, strategy)

    @property
    def adapters(self) -> list[str]:
        return list(self.model.tasks)

    @property
    def label_names(self) -> list[str]:  # of the active adapter, as a one-run Predictor has
        return self.model.tasks[self.active].label_names

    @property
    def max_length(self) -> int:
        return self.model.tasks[self.active].max_length

    def labels(self, adapter: str) -> list[str]:
        return self.model.tasks[self._check_name(adapter)].label_names

    def set_adapter(self, adapter: str) -> None:
        """Make `adapter` the one calls without `adapter=`/`adapters=` use."""
        self.active = self._check_name(adapter)

    def _check_name(self, name: str) -> str:
        if name not in self.model.tasks:
            raise UserError(f"unknown adapter {name!r}; loaded adapters: {', '.join(self.model.tasks)}")
        return name

    def _route(self, n: int, adapter: str | None, adapters: Sequence[str] | None) -> list[str]:
        if adapter is not None and adapters is not None:
            raise UserError("give either adapter= (one for all texts) or adapters= (one per text), not both")
        if adapters is None:
            return [self._check_name(adapter or self.active)] * n
        adapters = list(adapters)
        if len(adapters) != n:
            raise UserError(f"adapters: got {len(adapters)} names for {n} texts (one per text expected)")
        for a in set(adapters):
            self._check_name(a)
        return adapters

    def predict_logits(self, texts: Sequence[str], adapters: Sequence[str]) -> list[torch.Tensor]:
        """Per text its logits [its adapter's labels], in input order."""
        from .data.batches import sorted_batches
        from .data.tokens import tokenize
        tasks = self.model.tasks
        ids: list[list[int]] = [[] for _ in texts]
        for limit in {tasks[a].max_length for a in adapters}:  # each text truncated at its own run's limit
            idx = [i for i, a in enumerate(adapters) if tasks[a].max_length == limit]
            for i, row in zip(idx, tokenize(self.tokenizer, [texts[i] for i in idx], limit)):
                ids[i] = row
        out: list[torch.Tensor | None] = [None] * len(texts)
        for group in self._groups(adapters):
            for batch_idx in sorted_batches([len(ids[i]) for i in group], self.batch_size):
                rows = [group[j] for j in batch_idx]
                input_ids, mask = _pad([ids[i] for i in rows], self.pad_id)
                with torch.inference_mode():
                    res = self.model(input_ids.to(self.device), mask.to(self.device), [adapters[i] for i in rows])
                for pos, logits in res.values():
                    for p, row in zip(pos, logits.float().cpu()):
                        out[rows[p]] = row
        return out  # type: ignore[return-value]

    def _groups(self, adapters: Sequence[str]) -> list[list[int]]:
        """Index groups that run together: all mixable rows in one (mixed), every adapter alone otherwise."""
        by_name: dict[str, list[int]] = {}
        for i, a in enumerate(adapters):
            by_name.setdefault(a, []).append(i)
        if self.strategy == GROUPED:
            return list(by_name.values())
        mixed = [i for a, idx in by_name.items() if self.model.tasks[a].mixable for i in idx]
        alone = [idx for a, idx in by_name.items() if not self.model.tasks[a].mixable]
        return ([sorted(mixed)] if mixed else []) + alone

    def predict_proba(self, texts: Sequence[str], adapter: str | None = None) -> np.ndarray:
        """Class probabilities [n, labels of `adapter` (default: the active one)] in input order."""
        texts = _check_texts(texts)
        names = self._route(len(texts), adapter, None)
        t0 = time.perf_counter()
        logits = self.predict_logits(texts, names)
        self.last_throughput = len(texts) / max(time.perf_counter() - t0, 1e-9)
        if not logits:
            return np.zeros((0, len(self.labels(names[0]) if names else self.label_names)), dtype=np.float32)
        return torch.softmax(torch.stack(logits), dim=-1).numpy()

    def predict(self, texts: Sequence[str] | str, adapter: str | None = None,
                adapters: Sequence[str] | None = None) -> Any:
        """Per text: adapter, label, confidence and every class probability of its adapter's labels."""
        single = isinstance(texts, str)
        texts = _check_texts([texts] if single else texts)
        names = self._route(len(texts), adapter, [adapters] if single and isinstance(adapters, str) else adapters)
        t0 = time.perf_counter()
        logits = self.predict_logits(texts, names)
        self.last_throughput = len(texts) / max(time.perf_counter() - t0, 1e-9)
        out = []
        for name, row in zip(names, logits):
            probs = torch.softmax(row, dim=-1)
            k, labels = int(probs.argmax()), self.model.tasks[name].label_names
            out.append({"adapter": name, "label": labels[k], "confidence": float(probs[k]),
                        "probs": {n: float(p) for n, p in zip(labels, probs)}})
        return out[0] if single else out


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask [batch, longest]."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        input_ids[k, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[k, :len(r)] = 1
    return input_ids, mask


def split_tags(texts: Sequence[str], names: Sequence[str], default: str | None = None) -> tuple[list[str], list[str]]:
    """`NAME:text` -> (text, NAME) for a loaded adapter NAME; untagged texts go to `default`."""
    out_texts, out_names = [], []
    for i, t in enumerate(texts, start=1):
        head, sep, rest = t.partition(":")
        if sep and head.strip() in names:
            out_texts.append(rest.strip())
            out_names.append(head.strip())
        elif default is not None:
            out_texts.append(t)
            out_names.append(default)
        else:
            raise UserError(f"text {i} has no adapter tag: write NAME:text with NAME one of {', '.join(names)} "
                            f"(or pass --use NAME for untagged texts)")
    return out_texts, out_names


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """JSONL (one object per text) or CSV (probabilities as a JSON column: label sets differ per adapter)."""
    import csv
    import os
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".csv":
            w = csv.writer(f)
            w.writerow(["text", "adapter", "label", "confidence", "probs"])
            for r in rows:
                w.writerow([r["text"], r["adapter"], r["label"], f"{r['confidence']:.6f}", json.dumps(r["probs"])])
        else:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def predict_runs(runs: Mapping[str, str | Path], texts: Sequence[str] | None = None, *,
                 adapter: str | None = None, adapters: Sequence[str] | None = None, input: str | None = None,
                 text_column: str | None = None, adapter_column: str | None = None, output: str | None = None,
                 batch_size: int = 64, log: Any = None) -> list[dict[str, Any]]:
    """`transferkit.predict({name: run_dir, ...}, ...)`: each text goes to one adapter, chosen by
    `adapters` (one name per text), an input file's `adapter_column`, a `NAME:text` tag, or else `adapter`."""
    if texts is None and input is None:
        raise UserError("give texts to predict or --input FILE")
    if output is not None and Path(output).suffix.lower() not in (".jsonl", ".json", ".csv"):
        raise UserError(f"output file {output}: use a .jsonl or .csv name")
    names = [str(n) for n in runs]
    if adapter is not None and adapter not in names:
        raise UserError(f"unknown adapter {adapter!r}; loaded adapters: {', '.join(names)}")
    all_texts = list(texts or [])
    if adapters is not None:
        if len(list(adapters)) != len(all_texts):
            raise UserError(f"adapters: got {len(list(adapters))} names for {len(all_texts)} texts")
        routed = list(adapters)
    else:
        all_texts, routed = split_tags(all_texts, names, adapter)
    if input is not None:
        from .data.load import read_texts
        file_texts = read_texts(input, text_column)
        if adapter_column is not None:
            file_names = read_texts(input, adapter_column)
            unknown = sorted(set(file_names) - set(names))
            if unknown:
                raise UserError(f"{input}: adapter column {adapter_column!r} names {', '.join(unknown[:3])}, "
                                f"which are not loaded (loaded: {', '.join(names)})")
        else:
            file_texts, file_names = split_tags(file_texts, names, adapter)
        all_texts += file_texts
        routed += file_names
    if not all_texts:
        raise UserError("no texts to predict")
    predictor = AdapterPredictor.from_runs(runs, batch_size=batch_size)
    results = predictor.predict(all_texts, adapters=routed)
    if log is not None:
        log(f"predicted {len(all_texts)} texts with {len(set(routed))} adapter(s) on one base model "
            f"at {predictor.last_throughput:.1f} texts/s")
    rows = [{"text": t, **r} for t, r in zip(all_texts, results)]
    if output is not None:
        write_rows(Path(output), rows)
        if log is not None:
            log(f"wrote {output}")
    return rows
