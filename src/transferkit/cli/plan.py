"""`plan`: which method fits the data, the hardware and the number of tasks (over `api.plan`)."""
from __future__ import annotations

import argparse
import time
from typing import Any

from ..errors import UserError
from .common import overrides


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("plan", help="estimate every method's memory and time on this data and hardware; "
                                    "recommend one and write plan.json + run.yaml")
    p.add_argument("--task", help="classify (default) or ner")
    p.add_argument("--data", help="data file (csv/tsv/jsonl/parquet/conll), HF dataset folder, or bundled name")
    p.add_argument("--train", help="explicit training file (with --test, optionally --validation)")
    p.add_argument("--validation")
    p.add_argument("--test")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--model", help="bundled model name, local HF folder or hub name (default minilm-l6)")
    p.add_argument("--max-length", type=int, help="token limit (default: from the data)")
    p.add_argument("--epochs", type=float, help="passes over the data (default: per method)")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", help="a run config to plan for (its method is one of those compared)")
    p.add_argument("--memory", help="memory to plan for, e.g. 8GB or 16GB (default: what is free here)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="device to plan for (default: this machine's)")
    p.add_argument("--time-budget", help="time the training may take, e.g. 90m, 3h, 2d")
    p.add_argument("--tasks", type=int, default=1, help="task models to train and serve on this base (default 1)")
    p.add_argument("--methods", help="comma-separated methods to consider (default: all)")
    p.add_argument("--dry-run-steps", type=int, default=5,
                   help="real training steps per method on a sample of the data (default 5; the first is not timed)")
    p.add_argument("--no-dry-run", action="store_true", help="estimate only: no training steps, no time projection")
    p.add_argument("--output-dir", help="where plan.json and run.yaml go (default runs/plan-<time>)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.batch_size=32")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from .. import api
    if args.no_dry_run and args.dry_run_steps != 5:
        raise UserError("--no-dry-run and --dry-run-steps: give one")
    extra = overrides(args, api.SHORT_KEYS)
    output_dir = extra.pop("output_dir", None) or f"runs/plan-{time.strftime('%Y%m%d-%H%M%S')}"
    result = api.plan(args.config, memory=args.memory, device=args.device, time_budget=args.time_budget,
                      tasks=args.tasks, dry_run_steps=0 if args.no_dry_run else args.dry_run_steps,
                      methods=args.methods, output_dir=output_dir, **extra)
    print(result.table)
    print(f"\nplan: {result.output_dir / 'plan.json'}" + (
        f"; train it with: transferkit finetune --config {result.output_dir / 'run.yaml'}"
        if result.config is not None else ""))
    return 0
