"""Several runs on one copy of their base model, each a named adapter made active for its own calls.

For tasks whose model reads one run at a time (`Task.switches_adapters`: generation, where a causal LM
generates token by token with one run's weights), the runs of one base whose method saves a stock adapter
(`Method.stock_base`: a PEFT folder such as LoRA's) load onto one base: the first with its method's `load`,
the others with peft's `load_adapter`, and `use(name)` makes that run's adapter the active one. While a base
holds one run, its adapter is merged into the weights (a call costs what the base costs, as a lone run's
`Predictor` does); once a second run comes, the update is taken out again and the adapters stay unmerged (a
merge would change the base under the other runs), so each call costs the base plus the run's low-rank update. A server (`serving.models.ModelSet`) holds one `SwitchedBase` per base and method, and
uses it one call at a time.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..core.folders import check_finite, check_folder, loading
from ..core.runs import RunInfo
from ..modeling.resolve import load_tokenizer
from .loading import run_base, run_method, run_task
from .predictor import Predictor


class SwitchedBase:
    """One base model and the runs added to it (`add`, `remove`); `use(name)` gives that run's `Predictor`
    with its adapter active."""

    def __init__(self, device: str | None = None, batch_size: int = 64) -> None:
        self.device, self.batch_size = device, batch_size
        self.model: Any = None  # the peft model holding every run's adapter
        self.adapters: dict[str, str] = {}  # run name -> its adapter's name in the peft model
        self.predictors: dict[str, Predictor] = {}  # run name -> its predictor (its task, template, tokenizer)
        self.lock = threading.Lock()  # the holder's: one call, add or remove at a time
        self.merged = False  # the one run's adapter is folded into the base weights

    def add(self, name: str, run_dir: str | Path) -> None:
        info = RunInfo.read(run_dir)
        method, task = run_method(info), run_task(info)
        art = check_folder(info.artifact_dir, method.artifact_files, what=f"{info.method} artefact")
        with loading(art, f"{info.method} run"):
            if self.model is None:
                def base() -> Any:
                    return task.build_model(run_base(info), info.label_names, info.pooling, info.classifier_dropout,
                                            info.head_hidden, info.pool_layers)
                self.model = method.load(art, base)
                adapter = self.model.active_adapter  # the name the method's loader gave it
            else:
                self._unmerge()  # the base must be the base again before a second run shares it
                adapter = f"run-{name}"  # never the first adapter's name ("default")
                try:
                    self.model.load_adapter(str(art), adapter_name=adapter)
                except BaseException:
                    if adapter in self.model.peft_config:  # half added: the other runs keep the base as it was
                        self.model.delete_adapter(adapter)
                    raise
        check_finite(self.model, art)
        tok = load_tokenizer(str(info.artifact_dir))
        self.predictors[name] = Predictor(self.model, tok, info.label_names, info.max_length, self.batch_size,
                                          self.device, task)
        self.adapters[name] = adapter

    def remove(self, name: str) -> bool:
        """Drop the run's adapter; True when no run is left (the base can go)."""
        adapter = self.adapters.pop(name)
        del self.predictors[name]
        self._unmerge()
        if self.adapters:
            if adapter in self.model.active_adapters:
                self.model.set_adapter(next(iter(self.adapters.values())))
            self.model.delete_adapter(adapter)
        return not self.adapters

    def use(self, name: str) -> Predictor:
        """The run's predictor, its adapter the active one (merged into the weights while it is the only run)."""
        if len(self.adapters) == 1:
            if not self.merged:
                self.model.merge_adapter()
                self.merged = True
            return self.predictors[name]
        self._unmerge()
        self.model.set_adapter(self.adapters[name])
        return self.predictors[name]

    def _unmerge(self) -> None:
        if self.merged:
            self.model.unmerge_adapter()
            self.merged = False
