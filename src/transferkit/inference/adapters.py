"""Several lora/ia3/bitfit/head_only runs of one base model on a single encoder (`multi_adapter`),
switched per call or mixed per text: `Predictor.from_runs({name: run_dir})`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from ..data.batches import TokenData, batch_tokens, sorted_batches
from ..data.tokens import tokenize
from ..core.errors import UserError
from .predictor import Predictor, check_batch_size, check_texts, finite_probs

if TYPE_CHECKING:
    from .multi_adapter import MultiAdapterModel

MIXED, GROUPED = "mixed", "grouped"  # AdapterPredictor strategies


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
        from .entities import EntityCodec
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
        texts = check_texts(texts)
        names = self._route(len(texts), adapter, None)
        t0 = time.perf_counter()
        logits = self.predict_logits(texts, names)
        self.last_throughput = len(texts) / max(time.perf_counter() - t0, 1e-9)
        if not logits:
            return np.zeros((0, len(self.labels(names[0]) if names else self.label_names)), dtype=np.float32)
        return finite_probs(torch.softmax(torch.stack(logits), dim=-1))

    def predict(self, texts: Sequence[str] | str, adapter: str | None = None,
                adapters: Sequence[str] | None = None) -> Any:
        """Per text: its adapter and, for a sentence classifier, label, confidence and every class
        probability of its labels; for a tagger, its entities (aggregation "first")."""
        single = isinstance(texts, str)
        texts = check_texts([texts] if single else texts)
        names = self._route(len(texts), adapter, [adapters] if single and isinstance(adapters, str) else adapters)
        t0 = time.perf_counter()
        out = []
        for i, (name, res) in enumerate(zip(names, self.outputs(texts, names))):
            if self.model.tasks[name].per_token:
                out.append({"adapter": name, "entities": res})
                continue
            probs = torch.from_numpy(finite_probs(torch.softmax(res, dim=-1)[None], first=i))[0]
            k, labels = int(probs.argmax()), self.model.tasks[name].label_names
            out.append({"adapter": name, "label": labels[k], "confidence": float(probs[k]),
                        "probs": {n: float(p) for n, p in zip(labels, probs)}})
        self.last_throughput = len(texts) / max(time.perf_counter() - t0, 1e-9)
        return out[0] if single else out
