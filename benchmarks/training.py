"""Training throughput, peak memory and accuracy: `transformers.Trainer` baselines vs `transferkit finetune`.

One invocation runs every variant on the same model (bundled MiniLM-L6, or `--model mpnet-base`), the same train/test rows
(transferkit's seeded 80/10/10 split of movie-sentences), epochs, batch size and learning rate.
Each variant runs in its own spawned child process, so its peak RSS is its own.

    textbook   Trainer, padding="max_length" to 128, random sampling (the tutorial recipe)
    dynamic    Trainer with DataCollatorWithPadding and train_sampling_strategy="group_by_length"
    ours       transferkit.api.finetune (length-grouped batches, dynamic padding, fused AdamW)

The baselines use AutoModelForSequenceClassification (BERT's pooler head); for --method lora they
add peft LoRA r=8 on query,value with task type SEQ_CLS. Throughput is training-only for both:
Trainer's train_samples_per_second, and transferkit's metrics.json train.samples_per_s (step time
only; transferkit always validates after each epoch, which that figure leaves out).

Usage:
    python benchmarks/training.py --method full --epochs 1
    python benchmarks/training.py --method lora --epochs 1
    python benchmarks/training.py --quick
    python benchmarks/training.py --model mpnet-base --method lora --limit 2000 --variants dynamic,ours
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_common_args, data_config, environment, in_child, peak_rss_mb, print_table,  # noqa: E402
                     quiet_libraries, ratio, set_threads, write_json)

VARIANTS = ("textbook", "dynamic", "ours")
BASELINE_LR = {"full": 2e-5, "lora": 2e-4}  # the usual tutorial values
TEXTBOOK_MAX_LENGTH = 128
TARGETS = {"textbook": 1.5, "dynamic": 1.0}  # ours / baseline samples/s


# ---- children (run in fresh spawned processes) ---------------------------------------------

def run_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """Entry point of a child process: train one variant and report speed, memory and accuracy."""
    set_threads(spec["threads"])
    quiet_libraries()
    t0 = time.perf_counter()
    out = run_ours(spec) if spec["variant"] == "ours" else run_trainer(spec)
    out["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def run_trainer(spec: dict[str, Any]) -> dict[str, Any]:
    """A plain transformers.Trainer (+ peft for LoRA) with the textbook settings."""
    import datasets
    import numpy as np
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              PrinterCallback, Trainer, TrainingArguments, set_seed)

    from transferkit.tasks.classify.splits import prepare_splits
    from transferkit.modeling.resolve import resolve_model
    datasets.disable_progress_bars()
    padded = spec["variant"] == "textbook"
    splits = prepare_splits(spec["data"], spec["seed"])
    path = resolve_model(spec["model"]).path
    tok = AutoTokenizer.from_pretrained(path)
    set_seed(spec["seed"])
    id2label = dict(enumerate(splits.label_names))
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    if spec["method"] == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        from transferkit.methods.lora import DEFAULT_TARGETS  # the same layers ours adapts (query,value or q,v ...)
        targets = DEFAULT_TARGETS.get(model.config.model_type, ["query", "value"])
        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                                                 target_modules=targets))
    pad_kwargs = {"padding": "max_length"} if padded else {}

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return tok(batch["text"], truncation=True, max_length=TEXTBOOK_MAX_LENGTH, **pad_kwargs)

    def dataset(part: Any) -> Dataset:
        return Dataset.from_dict({"text": list(part.texts), "label": list(part.labels)}).map(
            encode, batched=True, remove_columns=["text"])

    train_ds, test_ds = dataset(splits.train), dataset(splits.test)
    with tempfile.TemporaryDirectory(prefix="tkbench-trainer-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, num_train_epochs=spec["epochs"], per_device_train_batch_size=spec["batch_size"],
            per_device_eval_batch_size=64, learning_rate=spec["lr"], warmup_steps=0.1, weight_decay=0.01,
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
            use_cpu=True, seed=spec["seed"], dataloader_num_workers=0,
            train_sampling_strategy="random" if padded else "group_by_length")
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                          data_collator=None if padded else DataCollatorWithPadding(tok))
        trainer.remove_callback(PrinterCallback)  # it prints a metrics dict; the table reports them
        train_out = trainer.train()
        pred = trainer.predict(test_ds)
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    # With group_by_length, predict() may reorder rows: score against the label_ids it returns.
    accuracy = float((np.asarray(logits).argmax(-1) == np.asarray(pred.label_ids)).mean())
    m = train_out.metrics
    return {"samples_per_s": m["train_samples_per_second"], "train_seconds": m["train_runtime"],
            "train_samples": len(train_ds) * spec["epochs"], "steps": train_out.global_step,
            "peak_rss_mb": round(peak_rss_mb(), 1), "test_accuracy": accuracy, "test_rows": len(test_ds),
            "lr": spec["lr"], "max_length": TEXTBOOK_MAX_LENGTH if padded else "dynamic (truncate at 128)"}


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """transferkit.api.finetune with evaluation as quiet as the loop allows."""
    from transferkit import api
    from transferkit.config.finetune import RunConfig
    cfg = RunConfig()
    cfg.data = spec["data"]
    cfg.model.name = spec["model"]
    cfg.method.name = spec["method"]
    t = cfg.train
    t.epochs, t.batch_size, t.seed = spec["epochs"], spec["batch_size"], spec["seed"]
    t.progress = False
    t.early_stopping_patience = None  # train every epoch, like the baselines
    # The baselines save nothing while training; mid-epoch checkpoints would land inside the timed steps.
    t.checkpoint_steps = 10**9
    if not spec["ours_defaults"]:
        t.lr = t.head_lr = spec["lr"]  # one lr for body and head, like Trainer
    cfg.output_dir = spec["run_dir"]
    result = api.finetune(cfg)
    rss = peak_rss_mb()  # read before anything else is loaded into this process
    tr = result.metrics["train"]
    return {"samples_per_s": tr["samples_per_s"], "train_seconds": tr["seconds"], "train_samples": tr["samples"],
            "steps": tr["steps"], "peak_rss_mb": round(rss, 1), "test_accuracy": result.metrics["test"]["accuracy"],
            "test_rows": result.metrics["data"]["sizes"]["test"], "lr": tr["lr"], "head_lr": tr["head_lr"],
            "max_length": result.metrics["data"]["max_length"], "run_dir": str(result.run_dir)}


# ---- parent --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, "training")
    p.add_argument("--method", choices=("full", "lora"), default="full")
    p.add_argument("--model", default="minilm-l6", help="bundled name or model folder (default minilm-l6)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, help="learning rate for all variants (default: full 2e-5, lora 2e-4)")
    p.add_argument("--limit", type=int, help="training rows (the first N of the seeded training split)")
    p.add_argument("--eval-limit", type=int, help="validation/test rows (default: all 1,057 each)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--ours-defaults", action="store_true", help="ours uses transferkit's per-method lr defaults")
    p.add_argument("--keep-run", type=Path, help="keep transferkit's run directory here (e.g. for inference.py --run)")
    args = p.parse_args(argv)
    if args.quick:
        args.limit = min(args.limit or 160, 160)
        args.epochs = min(args.epochs, 1.0)
        args.eval_limit = min(args.eval_limit or 200, 200)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        raise SystemExit(f"--variants: choose from {', '.join(VARIANTS)}")
    lr = args.lr or BASELINE_LR[args.method]

    set_threads(args.threads)
    quiet_libraries()
    env = environment(args.threads)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tkbench-training-") as work:
        data = data_config(args.limit, args.eval_limit, args.seed, Path(work))
        run_dir = args.keep_run or Path(work) / "ours-run"
        for v in variants:
            print(f"running {v} ({args.method}) in a child process ...", file=sys.stderr, flush=True)
            spec = {"variant": v, "method": args.method, "model": args.model, "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "lr": lr, "seed": args.seed, "threads": args.threads, "data": data,
                    "ours_defaults": args.ours_defaults, "run_dir": str(run_dir)}
            results[v] = in_child(run_variant, spec)
            print(f"  {v}: {results[v]['samples_per_s']:.1f} samples/s, {results[v]['wall_seconds']:.0f} s in all",
                  file=sys.stderr, flush=True)

    names = {"textbook": "Trainer, pad 128 (textbook)", "dynamic": "Trainer, dynamic + group_by_length",
             "ours": "transferkit finetune"}
    print()
    print_table(["variant", "samples/s", "train s", "peak RSS MB", "test acc", "lr", "child wall s"],
                [[names[v], r["samples_per_s"], r["train_seconds"], r["peak_rss_mb"], f"{r['test_accuracy']:.4f}",
                  f"{r['lr']:g}", r["wall_seconds"]] for v, r in results.items()])
    ratios: dict[str, Any] = {}
    if "ours" in results:
        ours = results["ours"]
        print()
        for base in ("textbook", "dynamic"):
            if base not in results:
                continue
            b = results[base]
            r = ratio(ours["samples_per_s"], b["samples_per_s"])
            ratios[f"ours_vs_{base}"] = {
                "samples_per_s": r, "peak_rss": ratio(ours["peak_rss_mb"], b["peak_rss_mb"]),
                "accuracy_points": round(100 * (ours["test_accuracy"] - b["test_accuracy"]), 2),
                "target": TARGETS[base], "met": r is not None and r >= TARGETS[base]}
            x = ratios[f"ours_vs_{base}"]
            print(f"ours / {base}: {r:.2f}x samples/s (target >= {TARGETS[base]:g}x: "
                  f"{'met' if x['met'] else 'NOT met'}), peak RSS {x['peak_rss']:.2f}x, "
                  f"test accuracy {x['accuracy_points']:+.2f} points")
    rows = results[variants[0]]["test_rows"]
    print(f"\ntest rows: {rows} (one row is {100 / max(rows, 1):.2f} points)"
          + ("; quick run: small data, numbers are noisy" if args.quick else ""))
    print("note: transferkit validates after every epoch (it cannot be turned off); its samples/s counts "
          "optimizer steps only, like Trainer's train_samples_per_second with evaluation off.")

    write_json(args.out, {
        "benchmark": "training", "quick": args.quick, "environment": env,
        "settings": {"model": args.model, "method": args.method, "epochs": args.epochs, "batch_size": args.batch_size, "lr": lr,
                     "ours_defaults": args.ours_defaults, "limit": args.limit, "eval_limit": args.eval_limit,
                     "seed": args.seed, "warmup": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0,
                     "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "targets": "the model's default (lora.py)"}
                     if args.method == "lora" else None},
        "results": results, "ratios": ratios,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
