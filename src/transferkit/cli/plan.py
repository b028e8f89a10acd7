"""`plan` and `tune`: which method fits the data, the hardware and the number of tasks (`api.plan`),
and which settings train it best (`api.tune`)."""
from __future__ import annotations

import argparse
import time
from typing import Any

from .. import api
from ..core.errors import UserError
from .common import overrides


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", help="classify (default), pair, regression, multilabel or ner")
    p.add_argument("--data", help="data file (csv/tsv/jsonl/parquet/conll), HF dataset folder, or bundled name")
    p.add_argument("--train", help="explicit training file (with --test, optionally --validation)")
    p.add_argument("--validation")
    p.add_argument("--test")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--label-separator", help="multilabel: what separates a CSV cell's labels (default ,)")
    p.add_argument("--model", help="bundled model name, local HF folder or hub name (default minilm-l6)")
    p.add_argument("--max-length", type=int, help="token limit (default: from the data)")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", help="a run config to start from")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("plan", help="estimate every method's memory and time on this data and hardware; "
                                    "recommend one and write plan.json + run.yaml")
    _data_args(p)
    p.add_argument("--epochs", type=float, help="passes over the data (default: per method)")
    p.add_argument("--memory", help="memory to plan for, e.g. 8GB or 16GB (default: what is free here)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="device to plan for (default: this machine's)")
    p.add_argument("--time-budget", help="time the training may take, e.g. 90m, 3h, 2d")
    p.add_argument("--tasks", type=int, default=1, help="task models to train and serve on this base (default 1)")
    p.add_argument("--methods", help="comma-separated methods to consider (default: all)")
    p.add_argument("--models", metavar="M,M,...", help="candidate models (bundled names or folders): ranked by a "
                   "transferability score on a sample of the data with each model frozen (LogME; for generation "
                   "the untuned likelihood per byte), the best planned, the others projected for the recommended "
                   "method")
    p.add_argument("--dry-run-steps", type=int, default=5,
                   help="real training steps per method on a sample of the data (default 5; the first is not timed)")
    p.add_argument("--no-dry-run", action="store_true", help="estimate only: no training steps, no time projection")
    p.add_argument("--output-dir", help="where plan.json and run.yaml go (default runs/plan-<time>)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.batch_size=32")
    p.set_defaults(func=cmd_plan)

    t = sub.add_parser("tune", help="search hyperparameters and the method's options with optuna; best.yaml + report")
    _data_args(t)
    t.add_argument("--method", help="the method to tune, or auto to search the method too (default lora)")
    t.add_argument("--n-trials", type=int, help="trials in the study (default 30)")
    t.add_argument("--timeout", help="stop starting trials after this long, e.g. 2h")
    t.add_argument("--metric", help="validation metric to optimise (default per task: accuracy / f1)")
    t.add_argument("--space", help="YAML space file: config key -> {low, high[, log]} | {choices: [...]} | fixed value")
    t.add_argument("--workers", type=int, default=1, help="processes working on the study together (default 1)")
    t.add_argument("--keep", type=int, default=3, help="trial run directories kept, best first (default 3)")
    t.add_argument("--output-dir", help="folder of the study, the trials, best.yaml and report.html")
    t.add_argument("--resume", metavar="DIR", help="continue the study in DIR (after an interruption, or with more --n-trials)")
    t.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every trial, e.g. train.eval_steps=50")
    t.set_defaults(func=cmd_tune)


def cmd_plan(args: argparse.Namespace) -> int:
    if args.no_dry_run and args.dry_run_steps != 5:
        raise UserError("--no-dry-run and --dry-run-steps: give one")
    extra = overrides(args, api.SHORT_KEYS)
    output_dir = extra.pop("output_dir", None) or f"runs/plan-{time.strftime('%Y%m%d-%H%M%S')}"
    result = api.plan(args.config, memory=args.memory, device=args.device, time_budget=args.time_budget,
                      tasks=args.tasks, dry_run_steps=0 if args.no_dry_run else args.dry_run_steps,
                      methods=args.methods, models=args.models, output_dir=output_dir, **extra)
    print(result.table)
    print(f"\nplan: {result.output_dir / 'plan.json'}" + (
        f"; train it with: transferkit finetune --config {result.output_dir / 'run.yaml'}"
        if result.config is not None else ""))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    extra = overrides(args, api.SHORT_KEYS)
    output_dir = extra.pop("output_dir", None)
    if args.resume:
        if args.config or args.method or args.space or extra:
            raise UserError("--resume continues a study with its own data, method and space; give only "
                            "--n-trials, --timeout or --workers with it")
        result = api.tune(resume=args.resume, n_trials=args.n_trials, timeout=args.timeout, workers=args.workers,
                          worker=args.worker)
    else:
        result = api.tune(args.config, method=args.method or "lora", n_trials=30 if args.n_trials is None else args.n_trials,
                          timeout=args.timeout, metric=args.metric, space=args.space, workers=args.workers,
                          keep=args.keep, output_dir=output_dir, **extra)
    if result is None:  # a worker process
        return 0
    s = result.summary
    print(f"{s['trials']} trials: {s['complete']} complete, {s['pruned']} pruned "
          f"({s['pruned_seconds']:.0f} s of {s['trial_seconds']:.0f} s spent on them), {s['failed']} failed")
    if result.best_run is not None:
        test = result.test_metrics or {}
        print(f"best: {s['metric']}={result.best_value:.4f} on validation, "
              + " ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float) and k != "loss")
              + " on test")
        print("  " + " ".join(f"{k}={v}" for k, v in result.best_params.items()))
        print(f"best run: {result.best_run}; repeat it with: transferkit finetune --config {result.output_dir / 'best.yaml'}")
    print(f"report: {result.output_dir / 'report.html'}; trials: {result.output_dir / 'trials.csv'}")
    return 0 if result.best_run is not None else 1
