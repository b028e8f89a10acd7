"""`plan`'s dry run: a few real training steps of a method on a sample of the training rows (the
loop's own step, `Trainer._step`), timed and with the peak memory measured, and one evaluation pass.
Nothing is written: the model, the optimizer and their checkpoint folder are thrown away."""
from __future__ import annotations

import dataclasses
import gc
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from ..data.batches import FeatureData, length_grouped_batches
from ..inference import pooled_features
from ..training.memory_estimate import MB
from ..training.memory_measure import PeakMemory


def sample_rows(split: Any, idx: list[int]) -> Any:
    """The rows `idx` of a split (sentence or tagged): every per-row field indexed (a list) or taken
    (mapped texts), the rest kept; a mapped tagged split takes them itself."""
    if not dataclasses.is_dataclass(split):
        return split.take(idx)
    n = len(split)

    def rows(value: Any) -> Any:
        return value.take(idx) if hasattr(value, "take") else [value[i] for i in idx]
    return dataclasses.replace(split, **{f.name: rows(getattr(split, f.name)) for f in dataclasses.fields(split)
                                         if f.name != "notes" and (isinstance(getattr(split, f.name), list)
                                                                   or hasattr(getattr(split, f.name), "take"))
                                         and len(getattr(split, f.name)) == n})


def dry_run(setup: Any, method: Any, tcfg: Any, batch: int, accum: int, steps: int, fill: bool = False) -> dict[str, Any]:
    """`steps` real training steps of `method` (the loop's own step; the first warms up and is not
    timed) on a seeded sample of the training rows, and one evaluation pass: samples/s and peak memory.
    `fill`: repeat rows when there are fewer than one step's batch (a run's batches never exceed its
    rows, but setfit's pair steps do: 16 pairs are 32 texts however few the rows)."""

    import torch
    from accelerate import Accelerator

    from ..training.loop import Trainer
    task, cfg = setup.task, setup.cfg
    acc = Accelerator(cpu=not torch.cuda.is_available())
    rows = len(setup.splits.train)
    n = min(rows, batch * accum * steps)
    rng = random.Random(cfg.train.seed)
    idx = sorted(rng.sample(range(rows), n))
    if fill and n < batch * accum:
        idx = [idx[k % n] for k in range(batch * accum)]
    sample = sample_rows(setup.splits.train, idx)
    encoded = task.encode(setup.tokenizer, sample, setup.max_length)
    pad = setup.tokenizer.pad_token_id or 0
    hidden = setup.hidden
    torch.manual_seed(cfg.train.seed)
    with PeakMemory(acc.device) as peak:
        head = method.default_head if cfg.model.head == "auto" else cfg.model.head
        model = task.build_model(setup.resolved, setup.splits.label_names, setup.pooling, cfg.model.classifier_dropout,
                                 0 if head == "linear" else hidden, cfg.model.pool_layers or method.default_pool_layers,
                                 random_init=cfg.model.init == "random")
        model = method.apply(model).to(acc.device).train()  # dropout on, as the loop trains
        peak.watch(model)
        t0 = time.perf_counter()
        if method.cache_features and task.pooled_features:
            feats = pooled_features(model, encoded, 64, pad, acc.device)
            eval_rate = len(encoded) / max(time.perf_counter() - t0, 1e-9)
            data = FeatureData(feats, encoded.labels)
        else:
            data = encoded
            eval_rate = None
        run_cfg = dataclasses.replace(tcfg, batch_size=batch, grad_accum=accum, progress=False)
        with tempfile.TemporaryDirectory(prefix="transferkit-plan-") as tmp:
            trainer = Trainer(model, data, run_cfg, Path(tmp), acc, pad, loss_fn=task.loss)  # stepped only: no lines
            lengths = data.lengths()
            batches = length_grouped_batches(lengths, batch, cfg.train.seed, 0, run_cfg.group_by_length)
            # the untimed first step takes the longest rows, so the measured peak is the run's
            longest = max(range(len(batches)), key=lambda i: max(lengths[j] for j in batches[i]))
            batches.insert(0, batches.pop(longest))
            groups = [batches[i:i + accum] for i in range(0, len(batches), accum)]
            timed, examples = 0.0, 0
            for k in range(steps):
                group = groups[k % len(groups)]
                t0 = time.perf_counter()
                trainer._step(group)
                peak.mark()
                if k > 0:
                    timed += time.perf_counter() - t0
                    examples += sum(len(b) for b in group)
            if eval_rate is None:  # one evaluation pass over the sample, as each epoch's validation runs
                t0 = time.perf_counter()
                task.evaluate(trainer.model, encoded, 64, pad, acc.device)
                eval_rate = len(encoded) / max(time.perf_counter() - t0, 1e-9)
        del trainer, model, data
    gc.collect()
    return {"steps": steps, "timed_steps": steps - 1, "seconds": round(timed, 3),
            "samples_per_s": round(examples / max(timed, 1e-9), 2), "eval_samples_per_s": round(eval_rate, 2),
            "peak_mb": round(peak.peak / MB, 1), "device": str(acc.device),
            "largest_batch": max(len(b) for b in batches)}
