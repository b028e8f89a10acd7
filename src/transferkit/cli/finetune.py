"""`finetune`, `demo` and `compare`: training runs (and tables of them) over `api.finetune`."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import api
from ..api import SHORT_KEYS
from ..core.errors import UserError
from ..core.registry import METHODS
from ..methods import option_fields
from ..recipes.demo import demo_config
from .common import overrides

DEMO_SENTENCES = [
    "A gorgeous, witty and deeply moving film.",
    "The plot is a mess and the acting is wooden.",
    "Not the best movie of the year, but I had fun.",
    "I wanted my two hours back.",
]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("demo", help="fine-tune the bundled encoder on the bundled movie sentences, then predict")
    p.add_argument("--output-dir", help="run directory (default runs/<time>-demo)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("finetune", help="train a classifier (or, with --task ner, an entity tagger) and write a run directory")
    _finetune_args(p)
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="train with N data-parallel processes on this machine (torchrun; gloo on CPU, NCCL on "
                        "GPUs); --batch-size stays the global batch. Several machines: start "
                        "`torchrun ... -m transferkit finetune` on each (README)")
    p.set_defaults(func=cmd_finetune)
    p = sub.add_parser("compare", help="train every method on the same data and budget; one table (or, with "
                                       "--train-sizes/--seeds/--augment, a table by training size)")
    _finetune_args(p, compare=True)
    for action in p._actions:  # the finetune options, minus those compare decides itself
        if action.dest in ("method", "resume"):
            action.help = argparse.SUPPRESS
        elif action.dest == "output_dir":
            action.help = "folder for OUT/<method> runs and OUT/compare.{md,csv,png} (default runs/compare)"
    p.add_argument("--methods", help="comma-separated methods (default: every registered method)")
    p.add_argument("--models", metavar="M,M,...", help="comma-separated models (bundled names or folders): every "
                   "method on every model, runs in OUT/<model>/<method>, one table comparing them")
    p.add_argument("--limit", type=int, help="use only the first N training rows (same rows for every method)")
    p.add_argument("--inference-repeats", type=int, default=3, help="timed passes over the test texts (median)")
    p.add_argument("--train-sizes", metavar="N,N,...", help="training examples per class, e.g. 8,32,128,512: every "
                   "method at each size (sampled from the training split; validation sampled to the same size)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per size (each draws its own examples); mean and "
                   "standard deviation are reported")
    p.add_argument("--seed-offset", type=int, default=0, metavar="K", help="train only the seeds from --seed + K "
                   "on, with the split and test sample of --seed: a grid measured in parts (--seeds 1 "
                   "--seed-offset 2 adds the third seed of --seeds 3; with --train-sizes or --test-rows)")
    p.add_argument("--augment-methods", metavar="M,M", help="the methods that also run with each --augment "
                   "(default: all of --methods)")
    p.add_argument("--test-rows", type=int, help="score on a stratified sample of about N test rows (default: all)")
    p.set_defaults(func=cmd_compare)


def _finetune_args(p: argparse.ArgumentParser, compare: bool = False) -> None:
    p.add_argument("--task", help="what is predicted: classify (one label per text; the default), pair (one label per "
                   "pair of texts), regression (numbers per text), multilabel (any number of labels per text), ner "
                   "(one tag per word) or generate (a completion per prompt, by a causal LM; default model "
                   "smollm2-135m, data bbc-headlines)")
    p.add_argument("--data", help="data file (csv/tsv/jsonl/parquet), HF dataset folder, or bundled name")
    p.add_argument("--train", help="explicit training file (use with --test, optionally --validation)")
    p.add_argument("--validation", help="explicit validation file")
    p.add_argument("--test", help="explicit test file")
    p.add_argument("--text-column", help="column with the text (default: auto-detect)")
    p.add_argument("--label-column", help="column with the label (default: auto-detect; regression: A,B for several "
                   "targets)")
    p.add_argument("--label-separator", help="multilabel: what separates a CSV cell's labels (default ,)")
    p.add_argument("--model", help="bundled model name, local HF folder or hub name (default minilm-l6)")
    p.add_argument("--method", help=_method_help())
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (default: per method)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-length", type=int, help="token limit (default: from the data)")
    if compare:
        p.add_argument("--augment", metavar="SPEC", action="append", help="also run the methods with this "
                       "augmentation (repeatable: one variant each; see transferkit augment --help)")
    else:
        from .augment import SPEC_HELP
        p.add_argument("--augment", metavar="SPEC", help="augment the training split: " + SPEC_HELP)
    p.add_argument("--seed", type=int)
    p.add_argument("--output-dir", help="run directory (default runs/<time>-<method>)")
    p.add_argument("--config", help="a run's config.yaml to start from")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.warmup=0.06")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return overrides(args, SHORT_KEYS)


def cmd_finetune(args: argparse.Namespace) -> int:
    if args.resume:
        if args.config:
            raise UserError("--config and --resume: a resumed run keeps its own config.yaml")
        api.finetune(resume=args.resume, processes=args.processes, **_overrides(args))
    else:
        cfg = api.make_config(args.config, _overrides(args))
        api.finetune(cfg, processes=args.processes)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    result = api.finetune(demo_config(args.output_dir))
    rows = api.predict(result.run_dir, DEMO_SENTENCES)
    test = result.metrics["test"]
    print(f"\ntest accuracy {test['accuracy']:.1%}, F1 {test['f1']:.1%} on "
          f"{result.metrics['data']['sizes']['test']} held-out movie sentences")
    for r in rows:
        print(f"{r['label']:>9} {r['confidence']:.2f}  {r['text']}")
    print(f"\nreport: {result.run_dir / 'report' / 'report.html'}")
    return 0


def _method_help() -> str:
    options = ", ".join(f"method.{k} ({'/'.join(owners)})" for k, (_, _, owners) in option_fields().items())
    return f"{' | '.join(METHODS.names())} (default full); each method's own options as KEY=VALUE: {options}"


def cmd_compare(args: argparse.Namespace) -> int:
    if args.method or args.resume:
        raise UserError("compare takes --methods a,b,c (it resumes interrupted runs itself); "
                        "--method and --resume belong to finetune")
    augment, args.augment = args.augment, None  # variants of the grid, not one run's data.augment
    overrides = _overrides(args)
    output_dir = overrides.pop("output_dir", None)
    result = api.compare(args.methods, config=args.config, output_dir=output_dir,
                         inference_repeats=args.inference_repeats, train_sizes=args.train_sizes, seeds=args.seeds,
                         augment=augment, augment_methods=args.augment_methods, test_rows=args.test_rows,
                         seed_offset=args.seed_offset, models=args.models, **overrides)
    print(result.markdown)
    if result.failed:
        print(f"transferkit: {len(result.failed)} method(s) failed: {', '.join(result.failed)} "
              f"(logs in {result.output_dir / 'logs'})", file=sys.stderr)
        return 1
    return 0


