"""One fine-tuning run as an object: `FinetuneRun(cfg).run()` = setup -> fit -> save (the shared
skeleton in `recipes/run.py` claims or resumes the run directory around them).

`api.finetune` is a few lines over it, and so will be search, planning and serving, which run or
vary a fine-tuning run inside one process. The run never branches on a task's or a method's
name: the task (`tasks/`) says how data becomes tensors, what the loss and metrics are and what
the report shows; the method (`methods/`) says what trains and how it is saved.

    setup()  validate the config, resolve the model, prepare and check the data, choose max_length
             (nothing is written: bad input fails here, before any run directory exists)
    fit()    build the model, encode the splits, train (resuming from the last checkpoint)
    save()   score the test split, write the artefact, run.json, the report and metrics.json (last)
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import tasks
from ..config.checks import validate
from ..config.finetune import describe_duration
from ..core import fs, logs
from ..core.runtime import describe_hardware
from ..core.errors import UserError
from ..core.folders import check_folder, check_safetensors, loading, read_json_object
from ..core.registry import METHODS, MODELS
from ..core.runs import RunInfo, new_run_dir, read_history, trust_base
from ..data.batches import FeatureData
from ..data.fingerprint import check_fingerprints, data_fingerprints
from ..inference import pooled_features
from ..modeling.resolve import load_tokenizer, resolve_model
from ..reporting.model_card import write_run_card
from ..training import distributed, tracking
from .run import Run

logger = logging.getLogger(__name__)

BASE_DIR = "base"  # run_dir/base: the weightless base folder of a stock-loadable adapter (modeling.write_base)

DATA_FILE = "data.json"  # content hashes of the data files, written when the run starts
AUGMENT_FILE = "augment.json"  # the spec and a hash of the augmented training rows, when the run augments
EVAL_BATCH = 64


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict[str, Any]


class FinetuneRun(Run):
    """A fine-tuning run of `cfg` (a RunConfig); `resume` continues the run directory given."""

    command = "finetune"
    # What a search sets on the runs it starts: trials skip the test split (the best one is scored once,
    # at the end) and hear every validation result (to prune a hopeless trial).
    score_test: bool = True
    on_eval: Any = None  # called as on_eval(index of the evaluation, validation metrics)

    def before_new_run(self) -> None:
        trust_base(self.resolved.path)  # the user chose this base for a new run: its runs may load it again

    def start_files(self) -> None:
        fs.write_json(self.run_dir / DATA_FILE, self.fingerprints)
        if self.augment_record is not None:
            fs.write_json(self.run_dir / AUGMENT_FILE, self.augment_record)

    # ---- setup: everything that can fail on bad input -----------------------------------------
    def prepare(self) -> None:
        from ..data import tokens as tk
        cfg = self.cfg
        validate(cfg)
        self.task = tasks.get(cfg.task)
        self.task.configure(cfg)
        from ..augmentation import mixup_alpha, parse_spec, text_steps
        self.augment_steps = parse_spec(cfg.data.augment)
        self.mixup_alpha = mixup_alpha(self.augment_steps)
        if self.mixup_alpha is not None and not (self.task.pooled_features and self.task.one_label_per_example):
            raise UserError(f"augment: mixup mixes pooled sentence vectors and one-hot labels; a {cfg.task} run has "
                            "no one label per example to mix")
        if self.mixup_alpha is not None and cfg.train.parallel == "fsdp":
            raise UserError("augment: mixup hooks the head of the model the run built, and train.parallel=fsdp trains "
                            "a sharded copy of it; use train.parallel=ddp with mixup")
        self.method = METHODS.get(cfg.method.name)(cfg.method)
        if (refusal := self.method.refuses(self.task)) is not None:
            raise UserError(refusal)
        if cfg.model.name is None:
            cfg.model.name = self.task.default_model
        self.resolved = resolve_model(cfg.model.name)
        if Path(self.resolved.path).is_dir():  # checked before minutes of data preparation
            check_folder(self.resolved.path, ("config.json",), weights=cfg.model.init != "random")
        self.task.check_base(self.resolved)
        self.pooling = self.resolved.pooling if cfg.model.pooling == "auto" else cfg.model.pooling
        # checked now, created once every input is valid
        self.run_dir = self.resume if self.resume is not None else new_run_dir(cfg.output_dir, cfg.method.name)

        with logs.held() as summary:  # the data summary is shown only once the data passed every check
            self.splits = self.task.prepare(cfg.data, cfg.train.seed)
            self.fingerprints = data_fingerprints(cfg.data)
            started = self.run_dir / DATA_FILE
            if self.resume is not None and started.is_file():  # a resumed run trains on the rows it started with
                check_fingerprints(read_json_object(started, "data record"), cfg.data,
                                   hint="a run resumes only on the data it started with: restore the file or "
                                        "start a new run")
        logs.release(summary)
        self.augment_record = None
        if text_steps(self.augment_steps):  # the training split only: validation and test stay as they are
            self.splits = self.task.augment(self.splits, self.augment_steps, cfg.train.seed, cfg.data.augment)
            self._check_augmented_rows()

        self.tokenizer = load_tokenizer(self.resolved.path)
        self.stats = tk.length_stats(self.task.token_lengths(self.tokenizer, self.splits.train))
        from transformers import AutoConfig
        with loading(self.resolved.path, "model config"):
            model_config = AutoConfig.from_pretrained(self.resolved.path)
        limit = tk.model_max_length(self.tokenizer, model_config)
        encoder_cfg = (model_config.encoder if model_config.model_type == "transferkit_classifier"
                       else model_config.to_dict())
        n_layers = encoder_cfg.get("num_hidden_layers") or encoder_cfg.get("n_layers") or encoder_cfg.get("n_layer")
        self.hidden = int(encoder_cfg.get("hidden_size") or encoder_cfg.get("dim") or encoder_cfg.get("n_embd")
                          or encoder_cfg.get("d_model"))
        if cfg.model.pool_layers and n_layers and cfg.model.pool_layers > n_layers:
            raise UserError(f"model.pool_layers {cfg.model.pool_layers} exceeds the model's {n_layers} layers")
        self.max_length = cfg.data.max_length or tk.choose_max_length(self.stats, limit)
        if self.max_length > limit:
            raise UserError(f"data.max_length {self.max_length} exceeds the model's limit of {limit} tokens")
        s = self.stats
        logger.info(f"tokens per text (train): mean {s['mean']}, p95 {s['p95']}, max {s['max']} -> max_length "
                    f"{self.max_length}" + ("" if cfg.data.max_length else " (from the data)"))

    def _check_augmented_rows(self) -> None:
        """Record the augmented training rows by hash; a resumed run must get exactly the rows it started
        with (a changed synonym table, WordNet install or generation cache would change them)."""

        train = self.splits.train
        rows = [self.task.texts(train), getattr(train, "labels", None) or getattr(train, "tags", None)]
        digest = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()
        self.augment_record = {"spec": self.cfg.data.augment, "rows": len(train), "train_sha256": digest}
        path = self.run_dir / AUGMENT_FILE
        if self.resume is not None and path.is_file():
            started = read_json_object(path, "augmentation record")
            if started.get("train_sha256") != digest:
                raise UserError(f"{path}: the augmented training rows differ from those the run started with "
                                f"({started.get('rows')} rows then, {len(train)} now: the synonym table, WordNet or "
                                "the generation cache changed); restore them or start a new run")

    # ---- fit -------------------------------------------------------------------------------------
    def fit(self) -> Any:
        import torch
        from accelerate.utils import set_seed

        from ..methods.base import count_parameters, describe_parameters
        from ..training.loop import Trainer
        cfg, method = self.cfg, self.method
        self.accelerator = acc = distributed.accelerator(cpu=not torch.cuda.is_available(),
                                                          precision=cfg.train.precision, log_with=self.trackers())
        set_seed(cfg.train.seed)
        self.hardware = describe_hardware(acc.device, acc.num_processes)
        head = method.default_head if cfg.model.head == "auto" else cfg.model.head
        self.head_hidden = 0 if head == "linear" else self.hidden
        self.pool_layers = cfg.model.pool_layers or method.default_pool_layers
        model = self.task.build_model(self.resolved, self.splits.label_names, self.pooling,
                                      cfg.model.classifier_dropout, self.head_hidden, self.pool_layers,
                                      random_init=cfg.model.init == "random")
        model = method.apply(model)
        self.counts = count_parameters(model)
        logger.info(describe_parameters(self.counts))
        self.pad_id = self.tokenizer.pad_token_id or 0
        data = {name: self.task.encode(self.tokenizer, split, self.max_length)
                for name, split in (("train", self.splits.train), ("validation", self.splits.validation),
                                    ("test", self.splits.test))}
        model = method.before_training(model, data, self)
        if method.cache_features and self.task.pooled_features:
            data = self._cached_features(model, data)
        self.data = data

        evaluations = [0]

        def eval_fn(m: Any) -> dict[str, float]:
            metrics = self.task.evaluate(m, data["validation"], EVAL_BATCH, self.pad_id, acc.device)[0]
            if self.on_eval is not None:
                self.on_eval(evaluations[0], metrics)
            evaluations[0] += 1
            return metrics
        from .adaptive import adapt, class_weights
        counts = self.task.class_counts(self.splits)
        self.tcfg = tcfg = adapt(method.train_config(cfg.train, self.task), cfg.train, len(data["train"]), counts,
                                 self.splits.label_names, self.task.default_metric, self.task.min_steps)
        loss_fn = self.task.loss
        if cfg.train.class_weights == "balanced" and counts is not None:  # a multi-label task weighs its own
            weights = torch.tensor(class_weights(counts))
            logger.info("class weights (balanced): "
                        + ", ".join(f"{n} {w:.2f}" for n, w in zip(self.splits.label_names, weights.tolist())))
            loss_fn = functools.partial(self.task.loss, class_weights=weights)
        mixup = None
        if self.mixup_alpha is not None:
            from ..augmentation.mixup import Mixup
            mixup = Mixup(model, self.mixup_alpha)
            loss_fn = mixup.loss(loss_fn)
            logger.info(f"mixup: pooled vectors and labels mixed in every training batch (alpha {self.mixup_alpha:g})")
        tracking.start(acc, cfg.to_dict(), tcfg)
        trainer = Trainer(self.task.training_module(model), data["train"], tcfg, self.run_dir, acc, self.pad_id,
                          eval_fn=eval_fn if len(data["validation"]) else None, loss_fn=loss_fn)
        self.restore(trainer)
        logger.info(f"training {method.name}: lr {tcfg.lr:g} (head {tcfg.head_lr:g}), {describe_duration(tcfg)} = "
                    f"{trainer.total_steps} steps of {tcfg.batch_size * tcfg.grad_accum} examples, early stopping "
                    f"patience {tcfg.early_stopping_patience}, {acc.device}"
                    f"{', bf16 autocast' if acc.mixed_precision == 'bf16' else ''}"
                    f"{f', {acc.num_processes} processes ({tcfg.parallel})' if acc.num_processes > 1 else ''}")
        from .compare.run import current_rss_mb
        self.rss_before_train = current_rss_mb()  # the memory training adds is the peak minus this
        self.state = trainer.fit()
        if mixup is not None:
            mixup.remove()
        self.trainer = trainer
        self.model = model  # what the loop trained shares its parameters (`Task.training_module`)
        return self.state

    def _cached_features(self, model: Any, data: dict) -> dict:
        """Encode every split once with the frozen encoder; reuse the cache when a run resumes."""
        from safetensors.torch import load_file
        from safetensors.torch import save as to_bytes

        path = self.run_dir / "cache" / "features.safetensors"
        device = self.accelerator.device
        if path.is_file():
            check_safetensors(path)
            with loading(path, "cached features"):
                feats = load_file(str(path))
            logger.info(f"using cached encoder features from {path}")
        else:
            t0 = time.perf_counter()
            model.to(device)
            feats = {name: pooled_features(model, d, EVAL_BATCH, self.pad_id, device).contiguous()
                     for name, d in data.items()}
            if distributed.is_main():
                path.parent.mkdir(parents=True, exist_ok=True)
                fs.write_bytes(path, to_bytes(feats))
            logger.info(f"encoded {sum(len(d) for d in data.values())} texts once with the frozen encoder "
                        f"in {time.perf_counter() - t0:.1f} s (cached in {path})")
        return {name: FeatureData(feats[name], d.labels) for name, d in data.items()}

    # ---- save ------------------------------------------------------------------------------------
    def _write_base(self, folder: Path) -> None:
        from ..modeling.classifier import write_base
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        if self.resolved.name in MODELS:  # bundled: recorded by name, no path of this machine (`_encoder_path`)
            write_base(base.config, folder, self.resolved.name, None, MODELS.get(self.resolved.name).portable)
        else:
            write_base(base.config, folder, self.resolved.name, str(Path(self.resolved.path).resolve())
                       if Path(self.resolved.path).is_dir() else self.resolved.path)
        self.tokenizer.save_pretrained(folder)

    def save(self) -> FinetuneResult:
        from .compare.run import memory_report
        cfg, method, model, state, tcfg = self.cfg, self.method, self.model, self.state, self.tcfg
        run_dir = self.run_dir
        test_metrics, test_predictions = None, None
        self.task.after_training(model, self.data, self.pad_id, self.accelerator.device)
        if self.score_test:
            with distributed.sharded():  # each process scores its share of the test split
                test_metrics, test_predictions = self.task.evaluate_test(model, self.data["test"], EVAL_BATCH,
                                                                         self.pad_id, self.accelerator.device)
        if test_metrics is not None:
            tracking.log(self.accelerator, test_metrics, state.global_step, "test")
        if not distributed.is_main():  # rank 0 writes the run directory
            return FinetuneResult(run_dir, {"test": test_metrics})
        # The artefact is written beside its final name and swapped in: a crash never leaves half a model.
        if method.stock_base:  # the base folder stock peft calls load first; its absolute path goes in the adapter
            base = self.task.adapter_base(self.resolved)
            if base is None:
                fs.write_folder(run_dir / BASE_DIR, self._write_base)
                base = str((run_dir / BASE_DIR).resolve())
            method.point_to_base(model, base)
        fs.write_folder(run_dir / method.artifact,
                        lambda tmp: (method.save(model, tmp), self.tokenizer.save_pretrained(tmp)))
        # a bundled base is recorded by name alone: the run loads wherever that package is installed
        model_path = self.resolved.name if self.resolved.name in MODELS else self.resolved.path
        info = RunInfo(str(run_dir), method.name, self.resolved.name, model_path, self.splits.label_names,
                       self.max_length, self.pooling, cfg.model.classifier_dropout, self.head_hidden,
                       self.pool_layers, cfg.method.options_dict(), self.fingerprints, cfg.task,
                       head=self.task.head)
        info.write()
        # samples are the examples trained on (texts; windows of sentences for NER), as Trainer counts them
        samples_per_s = state.examples_seen / max(state.train_seconds, 1e-9)
        metrics = {"test": test_metrics, "validation": state.best_metrics,
                   "train": {"steps": state.global_step,
                             "epochs": round(state.global_step / self.trainer.steps_per_epoch, 3),
                             "samples": state.examples_seen, "scored_items": state.samples_seen,
                             "seconds": round(state.train_seconds, 2),
                             "samples_per_s": round(samples_per_s, 2), "stopped_early": state.stopped_early,
                             "best_step": state.best_step, "lr": tcfg.lr, "head_lr": tcfg.head_lr,
                             "batch_size": tcfg.batch_size, "max_epochs": tcfg.epochs, "metric": tcfg.metric,
                             "class_weights": cfg.train.class_weights, "hardware": self.hardware,
                             **method.train_record()},
                   "params": self.counts,
                   "data": {**self.splits.summary, "token_lengths": self.stats, "max_length": self.max_length},
                   "method": method.name, "model": self.resolved.name, "memory": memory_report(self.rss_before_train)}
        source = cfg.data.data or cfg.data.train
        if self.score_test:  # a search trial has no test scores: `transferkit evaluate` writes its report later
            self.task.write_report(run_dir / "report", self.splits, test_predictions, read_history(run_dir),
                                   title=f"transferkit: {method.name} on {source}",
                                   extra={"run directory": str(run_dir), "model": self.resolved.name,
                                          "method": method.name, "data": source, "split": "test"})
        if test_predictions is not None and (warning := self.task.collapse_warning(self.splits, test_predictions)):
            metrics["warnings"] = [warning]
            logger.warning(warning)
        write_run_card(run_dir / method.artifact, run_dir, info, self.task, cfg, metrics)  # the folder's README.md
        fs.write_json(run_dir / "metrics.json", metrics)  # last: its presence marks the run finished
        if test_metrics is not None:
            logger.info("test: " + " ".join(f"{k}={v:.4f}" for k, v in test_metrics.items() if isinstance(v, float)))
        logger.info(f"trained {state.examples_seen} samples in {state.train_seconds:.1f} s "
                    f"({samples_per_s:.1f} samples/s)")
        logger.info(f"run directory: {run_dir}")
        return FinetuneResult(run_dir, metrics)
