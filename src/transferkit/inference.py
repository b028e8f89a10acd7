"""Prediction: one `Predictor` that the CLI, evaluation and (later) serving all go through.

Texts are tokenized in one call, sorted by length and padded per batch (dynamic padding), run
under `torch.inference_mode`, and returned in input order. A LoRA adapter is merged into the
weights before serving, so prediction costs the same as a plain model.

`Predictor.from_runs({name: run_dir})` gives an `AdapterPredictor`: several lora/ia3/bitfit/head_only runs
of one base model on a single encoder (`multi_adapter`), switched per call or mixed per text;
`predict_runs` is its API/CLI entry (texts routed by list, `NAME:text` tag or file column).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .data.batches import FeatureData, TokenData, batch_tokens, sorted_batches
from .data.tokens import tokenize
from .errors import UserError

if TYPE_CHECKING:
    from .multi_adapter import MultiAdapterModel

MIXED, GROUPED = "mixed", "grouped"  # AdapterPredictor strategies
OUTPUT_SUFFIXES = (".jsonl", ".json", ".csv")  # prediction files


@torch.inference_mode()
def _batched(module: nn.Module, fn: Any, data: TokenData | FeatureData, batch_size: int, pad_id: int,
             device: torch.device | str) -> torch.Tensor:
    """`fn(batch) -> [batch, k]` over length-sorted batches in eval mode; rows back in input order.

    Inside `distributed.sharded()` each process computes its share of the rows and gets all of them back."""
    from . import distributed
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
        _check_batch_size(batch_size)
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
        folder (`backend` "auto" or "onnxruntime": see `inference_onnx`); `base_model` overrides the
        base folder the run records (see `RunInfo.base_model`)."""
        from . import runtime
        from .inference_onnx import check_backend, load_export
        from .runinfo import RunInfo
        runtime.setup()
        _check_batch_size(batch_size)
        if check_backend(backend, run_dir, quantize):
            return load_export(run_dir, batch_size, device)
        info = RunInfo.read(run_dir)
        model = info.load_model(merge=True, base_model=base_model)
        if quantize:
            model = quantize_int8(model)
        from . import tasks
        from .models import load_tokenizer
        tok = load_tokenizer(str(info.artifact_dir))
        # the run's task decides what predicting means (labels per text, entities per text, ...)
        return tasks.get(info.task).predictor(model, tok, info.label_names, info.max_length, batch_size, device)

    @classmethod
    def from_runs(cls, runs: Mapping[str, str | Path], device: str | None = None, batch_size: int = 64,
                  strategy: str = MIXED, base_model: str | None = None) -> "Predictor":
        """Several lora/ia3/bitfit/head_only runs of one base model on a single encoder (see `multi_adapter`):
        `p.predict(texts, adapter="topic")` or `p.predict(texts, adapters=[one name per text])`."""
        return AdapterPredictor.from_runs(runs, device, batch_size, strategy, base_model)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities [n, classes] in input order."""
        texts = _check_texts(texts)
        t0 = time.perf_counter()
        logits = self._logits(texts)
        self.last_throughput = len(texts) / max(time.perf_counter() - t0, 1e-9)
        return _finite_probs(torch.softmax(logits, dim=-1))

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


def _check_texts(texts: Sequence[str]) -> list[str]:
    """Texts as a list; a non-string or an empty text (training refuses those too) names its position."""
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise UserError(f"text {i + 1} is not a string: {t!r}")
        if not t.strip():
            raise UserError(f"text {i + 1} is empty: there is nothing to classify")
    return texts


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 1_000_000:
        raise UserError(f"batch size must be an integer in [1, 1000000], got {batch_size!r}")


def _finite_probs(probs: torch.Tensor, first: int = 0) -> np.ndarray:
    """Probabilities [n, k] as numpy (rows are texts `first`, `first + 1`, ...); NaN scores (from a model
    whose weights passed loading but overflow on this input) are an error, never output."""
    if not bool(torch.isfinite(probs).all()):
        bad = first + int((~torch.isfinite(probs)).any(-1).nonzero()[0, 0]) + 1
        raise UserError(f"the model produced non-finite scores for text {bad} (its weights overflow on this "
                        f"input); no predictions were written")
    return probs.numpy()


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
        self._codecs: dict[str, Any] = {}  # tagger adapter -> its EntityCodec

    @classmethod
    def from_runs(cls, runs: Mapping[str, str | Path], device: str | None = None, batch_size: int = 64,
                  strategy: str = MIXED, base_model: str | None = None) -> "AdapterPredictor":
        """Load `{name: run_dir}` (lora, ia3 and head_only runs of one base model) on a single encoder."""
        from .multi_adapter import load_runs
        _check_batch_size(batch_size)
        model, tokenizer = load_runs(runs, base_model)
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
        """Per text its logits [its adapter's labels], in input order (sentence classifiers only)."""
        if any(self.model.tasks[a].per_token for a in adapters):
            raise UserError("predict_logits is for sentence classifiers; tag texts with predict()")
        return self.outputs(texts, adapters)

    def outputs(self, texts: Sequence[str], adapters: Sequence[str]) -> list[Any]:
        """Per text (of any adapter, classifiers and taggers mixed in the same encoder passes): its
        logits [labels] for a sentence classifier, its entities (aggregation "first") for a tagger."""
        ids, owner, tagged = self._encode(texts, adapters)
        rows = self._forward(ids, [adapters[o] for o in owner])
        out: list[Any] = [None] * len(texts)
        for r, o in enumerate(owner):
            if not self.model.tasks[adapters[o]].per_token:
                out[o] = rows[r]
        for a, (idx, words, enc, first) in tagged.items():
            probs = [torch.softmax(rows[first + w], dim=-1).numpy() for w in range(len(enc.input_ids))]
            for i, ents in zip(idx, self._codec(a).decode([texts[i] for i in idx], words, enc, probs)):
                out[i] = ents
        return out

    def _encode(self, texts: Sequence[str], adapters: Sequence[str]) -> tuple[list[list[int]], list[int], dict]:
        """Model rows (token ids) and the text each belongs to: one row per text of a sentence
        classifier (truncated at its own run's max_length), the windows of each text of a tagger.
        The third value: per tagger, (its text positions, their words, their windows, first row)."""
        tasks = self.model.tasks
        ids: list[list[int]] = []
        owner: list[int] = []
        plain = [i for i, a in enumerate(adapters) if not tasks[a].per_token]
        for limit in dict.fromkeys(tasks[adapters[i]].max_length for i in plain):
            idx = [i for i in plain if tasks[adapters[i]].max_length == limit]
            for i, row in zip(idx, tokenize(self.tokenizer, [texts[i] for i in idx], limit)):
                ids.append(row)
                owner.append(i)
        tagged: dict[str, tuple] = {}
        for a in dict.fromkeys(a for a in adapters if tasks[a].per_token):
            idx = [i for i, x in enumerate(adapters) if x == a]
            words, enc = self._codec(a).encode([texts[i] for i in idx])
            tagged[a] = (idx, words, enc, len(ids))
            for w, row in enumerate(enc.input_ids):
                ids.append(row)
                owner.append(idx[enc.sentence[w]])
        return ids, owner, tagged

    def _codec(self, adapter: str) -> Any:
        from .inference_tokens import EntityCodec
        if adapter not in self._codecs:
            t = self.model.tasks[adapter]
            self._codecs[adapter] = EntityCodec(self.tokenizer, t.label_names, t.max_length)
        return self._codecs[adapter]

    def _forward(self, ids: list[list[int]], names: list[str]) -> list[torch.Tensor]:
        """Per row its logits ([labels], or [row length, labels] for a tagger's row), mixing rows of
        different adapters in one encoder pass where they allow it."""
        out: list[torch.Tensor | None] = [None] * len(ids)
        for group in self._groups(names):
            for batch_idx in sorted_batches([len(ids[i]) for i in group], self.batch_size, batch_tokens(self.device)):
                rows = [group[j] for j in batch_idx]
                batch = TokenData(ids).collate(rows, self.pad_id)
                with torch.inference_mode():
                    res = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                                     [names[i] for i in rows])
                for pos, logits in res.values():
                    for p, row in zip(pos, logits.float().cpu()):
                        r = rows[p]
                        out[r] = row[:len(ids[r])] if row.dim() == 2 else row  # a tagger's row: drop the padding
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
        return _finite_probs(torch.softmax(torch.stack(logits), dim=-1))

    def predict(self, texts: Sequence[str] | str, adapter: str | None = None,
                adapters: Sequence[str] | None = None) -> Any:
        """Per text: its adapter and, for a sentence classifier, label, confidence and every class
        probability of its labels; for a tagger, its entities (aggregation "first")."""
        single = isinstance(texts, str)
        texts = _check_texts([texts] if single else texts)
        names = self._route(len(texts), adapter, [adapters] if single and isinstance(adapters, str) else adapters)
        t0 = time.perf_counter()
        out = []
        for i, (name, res) in enumerate(zip(names, self.outputs(texts, names))):
            if self.model.tasks[name].per_token:
                out.append({"adapter": name, "entities": res})
                continue
            probs = torch.from_numpy(_finite_probs(torch.softmax(res, dim=-1)[None], first=i))[0]
            k, labels = int(probs.argmax()), self.model.tasks[name].label_names
            out.append({"adapter": name, "label": labels[k], "confidence": float(probs[k]),
                        "probs": {n: float(p) for n, p in zip(labels, probs)}})
        self.last_throughput = len(texts) / max(time.perf_counter() - t0, 1e-9)
        return out[0] if single else out


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


def write_predictions(path: Path, rows: list[dict[str, Any]], label_names: Sequence[str] = ()) -> None:
    """The one prediction writer: JSONL (one object per text) or, for a .csv path, one row per text:
    text, label, confidence and a p_<label> column each (one run's labels); with several adapters
    (label sets differ) the probabilities as a JSON column; for entities, the entity list as JSON."""
    import csv
    import io

    from .core import fs
    buf = io.StringIO(newline="")
    if path.suffix.lower() != ".csv":
        for r in rows:
            buf.write(fs.dumps(r, ensure_ascii=False) + "\n")
    elif rows and "entities" in rows[0] and "adapter" not in rows[0]:
        w = csv.writer(buf)
        w.writerow(["text", "entities"])
        for r in rows:
            w.writerow([r["text"], fs.dumps(r["entities"], ensure_ascii=False)])
    elif rows and "adapter" in rows[0]:  # several runs: a tagger's row has its entities in the last column
        w = csv.writer(buf)
        tagger = any("entities" in r for r in rows)
        w.writerow(["text", "adapter", "label", "confidence", "probs"] + (["entities"] if tagger else []))
        for r in rows:
            if "entities" in r:
                w.writerow([r["text"], r["adapter"], "", "", "", fs.dumps(r["entities"], ensure_ascii=False)])
            else:
                w.writerow([r["text"], r["adapter"], r["label"], f"{r['confidence']:.6f}", fs.dumps(r["probs"])]
                           + ([""] if tagger else []))
    else:
        w = csv.writer(buf)
        w.writerow(["text", "label", "confidence"] + [f"p_{n}" for n in label_names])
        for r in rows:
            w.writerow([r["text"], r["label"], f"{r['confidence']:.6f}"] + [f"{r['probs'][n]:.6f}" for n in label_names])
    fs.write_text(path, buf.getvalue())


def predict_runs(runs: Mapping[str, str | Path], texts: Sequence[str] | None = None, *,
                 adapter: str | None = None, adapters: Sequence[str] | None = None, input: str | None = None,
                 text_column: str | None = None, adapter_column: str | None = None, output: str | None = None,
                 batch_size: int = 64, log: Any = None, base_model: str | None = None) -> list[dict[str, Any]]:
    """`transferkit.predict({name: run_dir, ...}, ...)`: each text goes to one adapter, chosen by
    `adapters` (one name per text), an input file's `adapter_column`, a `NAME:text` tag, or else `adapter`."""
    from .core import fs
    if texts is None and input is None:
        raise UserError("give texts to predict or --input FILE")
    _check_batch_size(batch_size)
    if output is not None:
        fs.check_output_file(output, OUTPUT_SUFFIXES)
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
    _check_texts(all_texts)
    predictor = AdapterPredictor.from_runs(runs, batch_size=batch_size, base_model=base_model)
    results = predictor.predict(all_texts, adapters=routed)
    if log is not None:
        log(f"predicted {len(all_texts)} texts with {len(set(routed))} adapter(s) on one base model "
            f"at {predictor.last_throughput:.1f} texts/s")
    rows = [{"text": t, **r} for t, r in zip(all_texts, results)]
    if output is not None:
        write_predictions(Path(output), rows)
        if log is not None:
            log(f"wrote {output}")
    return rows
