"""`transferkit plan`: which method fits this data, this hardware and this many tasks, and with what settings.

    PlanRun(cfg, memory="8GB", time_budget="3h", tasks=20).run() -> PlanResult

1. The data and the model are read as a fine-tuning run reads them (`FinetuneRun.setup`: the same
   checks, the same max_length), and the hardware from this machine (device, free memory, cores)
   unless `memory`/`device` describe another one.
2. For every method: exact parameter counts and a memory estimate by part (`memory_estimate`: the
   method applied on the meta device, activations counted as autograd saves them) at the method's
   batch size; a batch that does not fit is halved (with gradient accumulation keeping the
   examples per step) until it does. Unless `dry_run_steps` is 0, a few real training steps
   (`plan_dry_run`: the loop's own step) run on a sample of the training rows on this machine:
   samples/s and peak memory measured, from which the epoch and the whole run are projected
   (evaluation passes included).
3. One method is recommended with its reasons (`plan_advice.recommend`, rules of thumb stated in words: memory,
   time against the budget, data size against overfitting, artefact size x tasks, serving cost);
   plan.json holds every figure and run.yaml is a config `transferkit finetune --config` runs as is.

With `models` (`plan --models a,b,PATH`), the candidates are first ranked by a transferability score on a
sample of the training data, each model frozen (`plan_models`); the best-ranked is planned as above, and every
other one gets the recommended method's memory and projected time (plan.json's "models").

Nothing here writes a run directory: the dry runs train in memory and are thrown away.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from .. import tasks as task_kinds
from ..config.finetune import MethodConfig, RunConfig
from ..core import fs, logs, runtime
from ..core.errors import UserError
from ..core.registry import METHODS
from ..core.units import parse_duration, parse_memory
from ..modeling.resolve import parse_models, resolve_model
from ..training.memory_estimate import MB, MemoryEstimate, training_memory
from .adaptive import adapt
from .finetune import FinetuneRun
from .plan_advice import recommend, table
from .plan_dry_run import dry_run
from .plan_models import ModelScore, rank_models
from .plan_models import table as models_table
from .plan_types import GB, Hardware, MethodPlan, PlanResult  # noqa: F401  (GB: plan's callers read sizes in it)

logger = logging.getLogger(__name__)

MEMORY_HEADROOM = 0.9  # plan within 90% of the memory there is (the runtime and the data need some)


def detect_hardware(device: str | None = None, memory: str | int | None = None) -> Hardware:
    """This machine's device, usable memory and cores; `device`/`memory` describe another machine."""
    import psutil
    import torch
    if device not in (None, "cpu", "cuda"):
        raise UserError(f"--device {device!r}: expected cpu or cuda")
    has_cuda = torch.cuda.is_available()
    dev = device or ("cuda" if has_cuda else "cpu")
    here = memory is None and (dev == "cpu" or has_cuda)
    cores = runtime.usable_cores()
    if memory is not None:
        usable, name = parse_memory(memory), ""
    elif dev == "cuda" and has_cuda:
        usable, name = torch.cuda.mem_get_info()[0], torch.cuda.get_device_name()
    elif dev == "cuda":
        raise UserError("--device cuda: this machine has no GPU; give --memory (e.g. --memory 16GB) for the one planned for")
    else:
        usable, name = psutil.virtual_memory().available, f"{cores}-core CPU"
    return Hardware(dev, int(usable), cores, here, name)


# ---- the run ---------------------------------------------------------------------------------------

class PlanRun:
    """Plans `cfg` (a RunConfig: data, task, model, seed; method ignored) for `tasks` task models."""

    def __init__(self, cfg: Any, *, memory: str | int | None = None, device: str | None = None,
                 time_budget: str | float | None = None, tasks: int = 1, dry_run_steps: int = 5,
                 methods: list[str] | None = None, models: str | Sequence[str] | None = None,
                 output_dir: str | Path | None = None) -> None:
        if isinstance(tasks, bool) or not isinstance(tasks, int) or not 1 <= tasks <= 10_000:
            raise UserError(f"--tasks {tasks!r}: must be an integer in [1, 10000]")
        if isinstance(dry_run_steps, bool) or not isinstance(dry_run_steps, int) or not 0 <= dry_run_steps <= 1000:
            raise UserError(f"--dry-run-steps {dry_run_steps!r}: must be an integer in [0, 1000] (0: no dry run)")
        if dry_run_steps == 1:
            raise UserError("--dry-run-steps 1: the first step warms up and is not timed; give 2 or more (or 0)")
        self.cfg, self.tasks, self.dry_run_steps = cfg, tasks, dry_run_steps
        self.hardware = detect_hardware(device, memory)
        self.time_budget = parse_duration(time_budget) if time_budget is not None else None
        task = task_kinds.get(cfg.task)
        self.methods = methods or [m for m in METHODS.names() if METHODS.get(m).suits(task)]
        for m in self.methods:
            if (refusal := METHODS.get(m).refuses(task)) is not None:  # an unknown name lists the known ones
                raise UserError(f"{refusal}; plan the other methods")
        self.output_dir = Path(output_dir) if output_dir is not None else None
        if self.output_dir is not None:
            fs.check_writable_dir(self.output_dir)
        self.models = parse_models(models)
        if self.models:
            for name in self.models:
                resolve_model(name)  # an unknown model fails before any is scored (a bundled one is fetched now)
        self._device, self._memory, self._budget = device, memory, time_budget

    def run(self) -> PlanResult:
        scores = rank_models(self.cfg, self.models) if self.models else []
        if scores:  # the best-ranked model is the one planned in full
            self.cfg = RunConfig.from_dict(self.cfg.to_dict())
            self.cfg.model.name = scores[0].name
            logger.info(f"planning the methods on {scores[0].name}, the best-ranked of {len(scores)} models")
        setup = FinetuneRun(self.cfg)
        setup.setup()  # the data and model checks of a real run; nothing written
        self.setup = setup
        splits = setup.splits
        rows = len(splits.train)
        data = {"train_rows": rows, "validation_rows": len(splits.validation), "test_rows": len(splits.test),
                "classes": len(splits.label_names), "labels": list(splits.label_names)[:50],
                "token_lengths": setup.stats, "max_length": setup.max_length,
                **_class_sizes(splits, setup.task)}
        dry = self.dry_run_steps > 0 and self.hardware.here
        notes = []
        if self.dry_run_steps and not self.hardware.here:
            notes.append("no dry run: the machine planned for is not this one (time is not projected)")
        plans = []
        for name in self.methods:
            try:
                plans.append(self._plan_method(name, rows, data, dry))
            except UserError as e:  # the method cannot adapt this model (bitfit on a decoder without biases)
                if len(self.methods) == 1:
                    raise
                notes.append(f"{name} left out: {e}")
        if not plans:
            raise UserError("no method can train this model: " + "; ".join(notes))
        recommended, reasons = recommend(plans, data, self.hardware, self.tasks, self.time_budget)
        config = self._config(next(p for p in plans if p.method == recommended)) if recommended else None
        if scores and recommended:
            self._project_models(scores, next(p for p in plans if p.method == recommended))
        result = PlanResult(data, self.hardware, self.tasks, self.time_budget, plans, recommended, reasons, config,
                            self.output_dir, notes=notes, models=[s.row() for s in scores])
        result.table = table(result) + ("\n\n" + models_table(scores) if scores else "")
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            fs.write_json(self.output_dir / "plan.json", result.to_json())
            if config is not None:
                fs.write_text(self.output_dir / "run.yaml", config.to_yaml())
        return result

    def _project_models(self, scores: list[ModelScore], best: MethodPlan) -> None:
        """The recommended method's memory and projected time on every ranked model (the best: from its plan)."""
        for s in scores:
            if s.rank == 1:
                plan = best
            else:
                cfg = RunConfig.from_dict(self.cfg.to_dict())
                cfg.model.name = s.name
                logger.info(f"projecting {best.method} on {s.name} ...")
                with logs.quiet():
                    plan = PlanRun(cfg, memory=self._memory, device=self._device, time_budget=self._budget,
                                   tasks=self.tasks, dry_run_steps=self.dry_run_steps, methods=[best.method]
                                   ).run().methods[0]
            s.method, s.memory_mb, s.fits = best.method, plan.memory.mb()["total"], plan.fits
            s.projected_seconds = plan.total_seconds

    # ---- one method ----------------------------------------------------------------------------
    def _plan_method(self, name: str, rows: int, data: dict[str, Any], dry: bool) -> MethodPlan:
        cfg, setup = self.cfg, self.setup
        plan = plan_method(name, str(setup.resolved.path), self.hardware, cfg.train, rows=rows,
                           max_length=setup.max_length, task=cfg.task, classes=data["classes"],
                           class_counts=data.get("class_rows"),
                           head=cfg.model.head, pool_layers=cfg.model.pool_layers,
                           options=cfg.method.options_dict() if cfg.method.name == name else None)
        if dry and plan.fits:
            from ..core.registry import METHODS
            method = METHODS.get(name)()
            logger.info(f"dry run: {name}, {self.dry_run_steps} steps of {plan.batch_size} examples ...")
            plan.dry_run = dry_run(setup, method, method.train_config(cfg.train, setup.task), plan.batch_size, plan.grad_accum,
                                   self.dry_run_steps)
            if plan.stage is not None:
                like = METHODS.get(plan.stage["like"])()
                logger.info(f"dry run: {name}'s own stage trains like {like.name}: {self.dry_run_steps} steps of "
                            f"{plan.stage['batch_size']} texts ...")
                d = dry_run(setup, like, like.train_config(cfg.train), plan.stage["batch_size"], 1, self.dry_run_steps,
                            fill=True)  # a pair step holds its full batch of texts even from 16 rows
                plan.stage.update(samples_per_s=d["samples_per_s"], peak_mb=d["peak_mb"], largest_batch=d["largest_batch"])
            project_time(plan, rows, data["validation_rows"], data["test_rows"],
                         cached=method.cache_features and setup.task.pooled_features)
        return plan

    def _config(self, plan: MethodPlan) -> Any:
        """The run config of the recommendation: the user's config with the method and its batch."""
        cfg = RunConfig.from_dict(self.cfg.to_dict())
        if cfg.method.name != plan.method:
            cfg.override("method.name", plan.method)
        cfg.override("train.batch_size", plan.batch_size)
        if plan.grad_accum != 1:
            cfg.override("train.grad_accum", plan.grad_accum)
        for key, value in ((plan.stage or {}).get("override") or {}).items():
            cfg.override(key, value)
        cfg.data.max_length = self.setup.max_length
        return cfg


def plan_method(name: str, model: str, hw: Hardware, train: Any, *, rows: int, max_length: int,
                task: str = "classify", classes: int = 2, head: str = "auto", pool_layers: int | None = None,
                options: dict[str, Any] | None = None, class_counts: Sequence[int] | None = None) -> MethodPlan:
    """Method `name`'s batch, steps, memory and artefact size for `rows` training rows on `hw`
    (`train`: the run's TrainConfig; unset values take the method's defaults; `class_counts`: the
    training rows of each class, even when not given). A batch that does not fit is halved, with
    gradient accumulation keeping the examples per step, down to 1; a stage of the method's own
    (setfit's pairs) is halved too, its batch option then set in the plan's config."""
    method = METHODS.get(name)(MethodConfig.from_dict({"name": name, **(options or {})}))
    tcfg = method.train_config(train, task_kinds.get(task))
    batch, accum = tcfg.batch_size, tcfg.grad_accum

    def estimate(b: int) -> MemoryEstimate:
        return training_memory(model, name, batch_size=b, max_length=max_length, task=task, num_labels=classes,
                               head=head, pool_layers=pool_layers, method_options=options, examples=rows)
    mem = estimate(batch)
    budget = hw.memory_bytes * MEMORY_HEADROOM
    while mem.total > budget and batch > 1:
        batch, accum = (batch + 1) // 2, accum * 2
        mem = estimate(batch)
    with logs.quiet():  # the run says what it adapts when it trains; a plan only counts the steps
        tcfg = adapt(dataclasses.replace(tcfg, batch_size=batch, grad_accum=accum), train, rows, None, (), "accuracy",
                     task_kinds.get(task).min_steps)
    epochs = tcfg.epochs if tcfg.epochs is not None else 1.0
    steps_per_epoch = max(1, math.ceil(rows / (batch * accum)))
    steps = tcfg.max_steps if tcfg.epochs is None else math.ceil(steps_per_epoch * epochs)
    if tcfg.max_steps:
        steps = min(steps, tcfg.max_steps)
    fits, peak, stage = mem.total <= budget, mem, None
    counts = list(class_counts) if class_counts else [rows // classes + (k < rows % classes) for k in range(classes)]
    own = method.own_stage(counts)
    if own is not None:  # its memory is the larger of the two stages'; it fits when both do
        def stage_memory(o: Any) -> MemoryEstimate:
            return training_memory(model, o.like, batch_size=o.batch_size, max_length=max_length, task=task,
                                   num_labels=classes, head=head, pool_layers=pool_layers)
        smem, first = stage_memory(own), own
        while smem.total > budget and own.batch_size > own.texts_per_item:
            own = method.own_stage(counts, batch=max(1, own.batch_size // own.texts_per_item // 2))
            smem = stage_memory(own)
        items = own.batch_size // own.texts_per_item
        stage = {"what": own.what, "like": own.like, "batch_size": own.batch_size, "steps": own.steps,
                 "memory_mb": round(smem.total / MB, 1), "fits": smem.total <= budget,
                 "override": {own.batch_option: items} if own is not first else None}
        fits, peak = fits and stage["fits"], max(mem, smem, key=lambda m: m.total)
    return MethodPlan(name, batch, accum, peak, fits, method.shares_base, epochs, steps,
                      _artefact_bytes(method, peak), tcfg.eval_steps, stage=stage)


def project_time(plan: MethodPlan, rows: int, validation_rows: int, test_rows: int, cached: bool = False) -> None:
    """Fill in `plan`'s projected seconds from its dry run: the optimizer steps at the measured
    samples/s, one validation pass per epoch at the measured evaluation rate, and for a method that
    caches features one encoding pass over every split instead (its epochs then cost almost nothing)."""
    d = plan.dry_run
    per_step = plan.batch_size * plan.grad_accum
    plan.train_seconds = round(plan.steps * per_step / d["samples_per_s"], 1)
    passes = (math.ceil(plan.steps / plan.eval_steps) if plan.eval_steps
              else max(1, math.ceil(plan.steps * per_step / max(rows, 1))))  # the loop validates after every epoch
    plan.eval_seconds = round(0.0 if cached else passes * validation_rows / d["eval_samples_per_s"], 1)
    if cached:
        plan.eval_seconds = round((rows + validation_rows + test_rows) / d["eval_samples_per_s"], 1)
    plan.total_seconds = round(plan.train_seconds + plan.eval_seconds, 1)
    plan.epoch_seconds = round(plan.total_seconds / max(plan.epochs, 1e-9), 1)
    s = plan.stage
    if s is not None and s.get("samples_per_s"):  # the method's own stage runs first, at its own rate
        s["train_seconds"] = round(s["steps"] * s["batch_size"] / s["samples_per_s"], 1)
        plan.total_seconds = round(plan.total_seconds + s["train_seconds"], 1)


def _class_sizes(splits: Any, task: Any) -> dict[str, Any]:
    """The largest class's share of the training rows and the smallest class's rows (None where examples have
    no one class: tags, label sets, numbers)."""
    counts = [c for c in (task.class_counts(splits) or []) if c]
    if not counts:
        return {"largest_class_share": None, "smallest_class_rows": None, "class_rows": None}
    return {"largest_class_share": round(max(counts) / sum(counts), 4), "smallest_class_rows": min(counts),
            "class_rows": counts}


def _artefact_bytes(method: Any, mem: MemoryEstimate) -> int:
    """Bytes one task's artefact takes: the whole model for a method that saves its own copy of every
    weight (full, setfit), else what trains (adapter weights, biases, the head)."""
    return mem.weights if method.artifact == "model" and not method.shares_base else mem.trainable_params * 4
