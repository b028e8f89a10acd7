"""Head-only training: transferkit's cached encoder features vs re-encoding every epoch.

With a frozen encoder, transferkit encodes every split once and trains the head on the cached
vectors. The baseline is the loop people write by hand: each epoch runs the frozen encoder
under no_grad over every training batch, then takes a head step. transferkit's head_only has no
switch to turn caching off, so the baseline loop lives here; it reuses transferkit's model,
optimizer groups, schedule and batch order, so caching is the only difference.

Both are timed end to end in this one process (data preparation, tokenization, model load,
encoding, training, test accuracy). Ours is the whole `transferkit.api.finetune` call, which
also validates each epoch, saves the model and writes its report.

Usage:
    python benchmarks/head_only_cache.py              # full split, 3 epochs
    python benchmarks/head_only_cache.py --quick      # 500 training rows, 200 validation/test rows
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_common_args, data_config, environment, print_table, quiet_libraries, ratio,  # noqa: E402
                     set_threads, write_json)

TARGET = 2.5  # baseline seconds / ours, end to end
ENCODE_LOG = re.compile(r"encoded (\d+) texts once .* in ([\d.]+) s")


def warm_up(data: Any, seed: int) -> None:
    """Untimed: lazy imports, page cache of the weights, first oneDNN kernel selection."""
    import torch

    from transferkit import api  # noqa: F401
    from transferkit.tasks.classify.splits import prepare_splits
    from transferkit.modeling.resolve import build_classifier, load_tokenizer, resolve_model
    splits = prepare_splits(data, seed)
    resolved = resolve_model("minilm-l6")
    tok = load_tokenizer(resolved.path)
    model = build_classifier(resolved, splits.label_names, resolved.pooling, 0.1).eval()
    with torch.inference_mode():
        model(**tok(list(splits.train.texts[:16]), padding=True, return_tensors="pt"))


def head_hidden(head: str) -> int:
    """Hidden width of the head as transferkit builds it: 0 for linear, the encoder width for mlp."""
    from transformers import AutoConfig

    from transferkit.modeling.resolve import resolve_model
    return 0 if head == "linear" else int(AutoConfig.from_pretrained(resolve_model("minilm-l6").path).hidden_size)


def baseline(data: Any, epochs: int, batch_size: int, lr: float, seed: int, same_batches: bool,
             head: str) -> dict[str, Any]:
    """Frozen encoder re-run every epoch: encoder forward under no_grad per batch, then a head step."""
    import torch
    from accelerate.utils import set_seed
    from transformers import AutoConfig, get_linear_schedule_with_warmup

    from transferkit.config.finetune import MethodConfig, TrainConfig
    from transferkit.data import tokens as tk
    from transferkit.data.batches import TokenData, length_grouped_batches
    from transferkit.tasks.classify.splits import prepare_splits
    from transferkit.inference import predict_logits
    from transferkit.methods.head_only import HeadOnly
    from transferkit.modeling.resolve import build_classifier, load_tokenizer, resolve_model
    from transferkit.training.optim import make_optimizer, param_groups

    t_start = time.perf_counter()
    defaults = TrainConfig()
    splits = prepare_splits(data, seed)
    resolved = resolve_model("minilm-l6")
    tok = load_tokenizer(resolved.path)
    # The same token limit transferkit would choose, so both see identical inputs.
    limit = tk.model_max_length(tok, AutoConfig.from_pretrained(resolved.path))
    max_length = tk.choose_max_length(tk.length_stats(tk.token_lengths(tok, splits.train.texts)), limit)
    train = TokenData(tk.tokenize(tok, splits.train.texts, max_length), list(splits.train.labels))
    test = TokenData(tk.tokenize(tok, splits.test.texts, max_length), list(splits.test.labels))
    pad_id = tok.pad_token_id or 0
    set_seed(seed)
    model = build_classifier(resolved, splits.label_names, resolved.pooling, 0.1, head_hidden(head))
    model = HeadOnly(MethodConfig()).apply(model)
    opt = make_optimizer(param_groups(model, lr, lr, defaults.weight_decay))
    total = math.ceil(len(train) / batch_size) * epochs
    sched = get_linear_schedule_with_warmup(opt, int(defaults.warmup * total), total)
    head_params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    model.encoder.eval()  # cached features are computed in eval mode; keep the encoder identical here

    t_train = time.perf_counter()
    for epoch in range(epochs):
        # transferkit orders FeatureData batches with all lengths equal; "same" reproduces those batches.
        lengths = [1] * len(train) if same_batches else train.lengths()
        for idx in length_grouped_batches(lengths, batch_size, seed, epoch, True):
            batch = train.collate(idx, pad_id)
            labels = batch.pop("labels")
            with torch.no_grad():
                pooled = model.pool(**batch)  # [batch, hidden]: the encoder work caching avoids
            logits = model.classifier(model.dropout(pooled))
            torch.nn.functional.cross_entropy(logits, labels).backward()
            torch.nn.utils.clip_grad_norm_(head_params, defaults.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    train_seconds = time.perf_counter() - t_train

    t_test = time.perf_counter()
    logits = predict_logits(model, test, 64, pad_id)
    test_seconds = time.perf_counter() - t_test
    accuracy = float((logits.argmax(-1) == torch.tensor(test.labels)).float().mean())
    return {"total_seconds": round(time.perf_counter() - t_start, 2), "train_seconds": round(train_seconds, 2),
            "test_encode_seconds": round(test_seconds, 2),
            "encoder_and_training_seconds": round(train_seconds + test_seconds, 2),
            "texts_encoded": len(train) * epochs + len(test), "test_accuracy": accuracy, "test_rows": len(test),
            "max_length": max_length, "lr": lr}


def ours(data: Any, epochs: int, batch_size: int, lr: float | None, seed: int, head: str,
         run_dir: Path) -> dict[str, Any]:
    """The whole `transferkit.api.finetune` call with method head_only (caching is its default)."""
    from transferkit import api
    from transferkit.config.finetune import RunConfig
    cfg = RunConfig()
    cfg.data = data
    cfg.method.name = "head_only"
    cfg.model.head = head
    t = cfg.train
    t.epochs, t.batch_size, t.seed, t.lr, t.head_lr = epochs, batch_size, seed, lr, lr
    t.progress = False
    t.early_stopping_patience = None  # always run every epoch, like the baseline
    cfg.output_dir = str(run_dir)
    lines: list[str] = []
    t0 = time.perf_counter()
    with _collected(lines):  # the encoding time is read off the run's own log line
        result = api.finetune(cfg)
    total = time.perf_counter() - t0
    enc = next((m for m in map(ENCODE_LOG.search, lines) if m), None)
    encode_seconds = float(enc.group(2)) if enc else None
    tr = result.metrics["train"]
    return {"total_seconds": round(total, 2), "train_seconds": tr["seconds"], "encode_seconds": encode_seconds,
            "encoder_and_training_seconds": round((encode_seconds or 0.0) + tr["seconds"], 2),
            "texts_encoded": int(enc.group(1)) if enc else None,
            "test_accuracy": result.metrics["test"]["accuracy"], "test_rows": result.metrics["data"]["sizes"]["test"],
            "max_length": result.metrics["data"]["max_length"], "lr": tr["lr"]}


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _collected(lines: list[str]) -> Iterator[None]:
    """transferkit's INFO lines appended to `lines` inside the block (and shown nowhere else)."""
    logger = logging.getLogger("transferkit")
    handler, level, propagate = _Lines(lines), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, "head_only_cache")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, help="head learning rate for both (default: transferkit's head_only 1e-3)")
    p.add_argument("--limit", type=int, help="training rows (the first N of the seeded training split)")
    p.add_argument("--eval-limit", type=int, help="validation/test rows (default: all 1,057 each)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--head", choices=("linear", "mlp"), help="head for both (default: transferkit's head_only default)")
    p.add_argument("--baseline-batches", choices=("same", "length-grouped"), default="same",
                   help="same: transferkit's batches (random lengths); length-grouped: less padding, a faster baseline")
    args = p.parse_args(argv)
    if args.quick:
        args.limit = min(args.limit or 500, 500)
        args.eval_limit = min(args.eval_limit or 200, 200)

    set_threads(args.threads)
    quiet_libraries()
    from transferkit.methods.head_only import HeadOnly
    lr = args.lr or HeadOnly.default_lr
    head = args.head or HeadOnly.default_head
    env = environment(args.threads)
    with tempfile.TemporaryDirectory(prefix="tkbench-head-") as work:
        data = data_config(args.limit, args.eval_limit, args.seed, Path(work))
        print("warming up ...", file=sys.stderr, flush=True)
        warm_up(data, args.seed)
        print(f"baseline: re-encoding every epoch, {args.epochs} epochs ...", file=sys.stderr, flush=True)
        base = baseline(data, args.epochs, args.batch_size, lr, args.seed, args.baseline_batches == "same", head)
        print(f"ours: transferkit finetune --method head_only, {args.epochs} epochs ...", file=sys.stderr, flush=True)
        mine = ours(data, args.epochs, args.batch_size, args.lr, args.seed, head, Path(work) / "run")

    end_to_end = ratio(base["total_seconds"], mine["total_seconds"])
    core = ratio(base["encoder_and_training_seconds"], mine["encoder_and_training_seconds"])
    print()
    print_table(["variant", "total s", "encoder+train s", "texts encoded", "test acc"],
                [["re-encode every epoch", base["total_seconds"], base["encoder_and_training_seconds"],
                  base["texts_encoded"], f"{base['test_accuracy']:.4f}"],
                 ["transferkit (cached features)", mine["total_seconds"], mine["encoder_and_training_seconds"],
                  mine["texts_encoded"], f"{mine['test_accuracy']:.4f}"]])
    print()
    print(f"speed-up end to end: {end_to_end:.2f}x (target >= {TARGET:g}x: {'met' if end_to_end >= TARGET else 'NOT met'})"
          f"; encoder + training only: {core:.2f}x")
    print(f"ours' total includes per-epoch validation, saving the model and the report; head: {head}; "
          f"baseline batches: {args.baseline_batches}" + ("; quick run: small data, noisy" if args.quick else ""))

    write_json(args.out, {
        "benchmark": "head_only_cache", "quick": args.quick, "environment": env,
        "settings": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": lr, "limit": args.limit,
                     "eval_limit": args.eval_limit, "seed": args.seed, "head": head,
                     "baseline_batches": args.baseline_batches},
        "results": {"reencode_baseline": base, "transferkit_cached": mine},
        "ratios": {"end_to_end": end_to_end, "encoder_and_training": core},
        "target": {"end_to_end": TARGET, "met": end_to_end is not None and end_to_end >= TARGET},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
