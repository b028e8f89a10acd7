"""Several lora/ia3/bitfit/head_only runs of one base model on a single encoder (`multi_adapter`),
switched per call or mixed per text: `Predictor.from_runs({name: run_dir})`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from ..data.batches import TokenData, batch_tokens, sorted_batches
from ..core.errors import UserError
from ..core.runs import RunInfo
from .loading import run_task
from ..modeling.forward import check_batch_size
from ..tasks.rows import check_texts, finite_probs

if TYPE_CHECKING:
    from .multi_adapter import MultiAdapterModel

MIXED, GROUPED = "mixed", "grouped"  # AdapterPredictor strategies


class AdapterPredictor:
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
        self._tasks: dict[str, Any] = {}  # adapter -> its run's task

    @classmethod
    def from_runs(cls, runs: Mapping[str, str | Path], device: str | None = None, batch_size: int = 64,
                  strategy: str = MIXED, base_model: str | None = None) -> "AdapterPredictor":
        """Load `{name: run_dir}` (lora, ia3 and head_only runs of one base model) on a single encoder."""
        from .multi_adapter import load_runs
        check_batch_size(batch_size)
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

    def task_of(self, adapter: str) -> Any:
        """The task object of an adapter's run (what its inputs are, how its outputs decode and are written)."""
        if adapter not in self._tasks:
            self._tasks[adapter] = run_task(RunInfo.read(self.model.tasks[adapter].run_dir))
        return self._tasks[adapter]

    def predict_logits(self, texts: Sequence[str], adapters: Sequence[str]) -> list[torch.Tensor]:
        """Per text its logits [its adapter's labels], in input order (runs with one output vector per text)."""
        rows, owner, _ = self._run(texts, adapters)
        if len(rows) != len(texts) or any(r.dim() != 1 for r in rows):
            raise UserError("predict_logits is for sentence classifiers; tag texts with predict()")
        out: list[Any] = [None] * len(texts)
        for r, o in zip(rows, owner):
            out[o] = r
        return out

    def _run(self, inputs: Sequence[Any], adapters: Sequence[str]) -> tuple[list[torch.Tensor], list[int], dict]:
        """Every adapter's inputs encoded by its task, all rows through the encoder together (mixed where the
        methods allow it): (outputs per row, the input each row belongs to, per adapter (its input positions,
        its encoding, its first row))."""
        ids: list[Any] = []
        owner: list[int] = []
        parts: dict[str, tuple[list[int], Any, int]] = {}
        for a in dict.fromkeys(adapters):
            idx = [i for i, x in enumerate(adapters) if x == a]
            enc = self.task_of(a).encode_inputs(self.tokenizer, [inputs[i] for i in idx],
                                                self.model.tasks[a].max_length)
            enc.positions = idx
            parts[a] = (idx, enc, len(ids))
            ids += enc.rows
            owner += [idx[o] for o in enc.owner]
        rows = self._forward(ids, [adapters[o] for o in owner])
        return rows, owner, parts

    def _per_input(self, inputs: Sequence[Any], adapters: Sequence[str], finish: Any) -> list[Any]:
        """Per input, `finish(task, its rows' outputs, its encoding, labels)` of its adapter's run, after one
        shared forward pass over every adapter's rows."""
        rows, _, parts = self._run(inputs, adapters)
        out: list[Any] = [None] * len(inputs)
        for a, (idx, enc, first) in parts.items():
            mine = rows[first:first + len(enc.rows)]
            for i, res in zip(idx, finish(self.task_of(a), mine, enc, self.model.tasks[a].label_names)):
                out[i] = res
        return out

    def results(self, inputs: Sequence[Any], adapters: Sequence[str], **options: Any) -> list[Any]:
        """Per input (of any adapter, every task mixed in the same encoder passes), its task's output row."""
        return self._per_input(inputs, adapters, lambda task, rows, enc, labels: task.decode(
            rows, enc, labels, **task.check_decode_options(options)))

    def outputs(self, inputs: Sequence[Any], adapters: Sequence[str]) -> list[Any]:
        """Per input, what a server answers from: its task's `serving_results` (a classifier's logits, a
        tagger's entities)."""
        return self._per_input(inputs, adapters,
                               lambda task, rows, enc, labels: task.serving_results(rows, enc, labels))

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
        texts = check_texts(texts)
        names = self._route(len(texts), adapter, None)
        t0 = time.perf_counter()
        logits = self.predict_logits(texts, names)
        self.last_throughput = len(texts) / max(time.perf_counter() - t0, 1e-9)
        if not logits:
            return np.zeros((0, len(self.labels(names[0]) if names else self.label_names)), dtype=np.float32)
        return finite_probs(torch.softmax(torch.stack(logits), dim=-1))

    def predict(self, texts: Sequence[Any] | Any, adapter: str | None = None,
                adapters: Sequence[str] | None = None, **options: Any) -> Any:
        """Per input: its adapter and its task's output row (a sentence classifier's label, confidence and
        every class probability; a tagger's entities)."""
        if adapters is not None and not isinstance(adapters, str):  # one name per input: a list of inputs
            single = False
        else:  # one input alone, as its run's task reads one (a text; a pair run: [a, b] is one pair)
            single = self.task_of(self._check_name(adapter) if adapter is not None else self.active).is_single(texts)
        items = [texts] if single else list(texts)
        names = self._route(len(items), adapter, [adapters] if single and isinstance(adapters, str) else adapters)
        for name in dict.fromkeys(names):  # each input checked by its own run's task (texts, pairs, ...)
            idx = [i for i, n in enumerate(names) if n == name]
            for i, item in zip(idx, self.task_of(name).check_inputs([items[i] for i in idx])):
                items[i] = item
        t0 = time.perf_counter()
        out = [{"adapter": name, **row} for name, row in zip(names, self.results(items, names, **options))]
        self.last_throughput = len(items) / max(time.perf_counter() - t0, 1e-9)
        return out[0] if single else out
