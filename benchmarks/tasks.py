"""Sentence pairs, regression and multi-label: a plain `transformers.Trainer` against `transferkit finetune`,
per task, in one invocation.

Both train the bundled MiniLM-L6 on the same rows (transferkit's seeded split of the task's bundled data, the
first `--limit` training rows), the same epochs, batch size and learning rate, each in its own spawned child:

    trainer   AutoModelForSequenceClassification with the stock `problem_type` (single_label_classification
              for pairs, regression, multi_label_classification), the tokenizer's own encoding (`text, text_pair`
              for pairs), DataCollatorWithPadding, Trainer; regression on the raw targets, multi-label decided
              at probability 0.5, as a Trainer user gets them
    ours      transferkit.api.finetune(task=...): mean pooling, length-grouped batches, standardised
              regression targets, thresholds tuned per label on the validation split

Both are scored with the same functions on the same test split: accuracy (pairs), Pearson r (regression),
micro F1 (multi-label). Throughput is training-only (Trainer's train_samples_per_second, transferkit's
train.samples_per_s).

    python benchmarks/tasks.py                      # all three tasks, 2,000 rows, 2 epochs
    python benchmarks/tasks.py --tasks pair --quick
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_common_args, environment, in_child, peak_rss_mb, print_table, quiet_libraries,  # noqa: E402
                     ratio, set_threads, write_json)

TARGET = 1.2  # ours / Trainer samples/s
DATA = {"pair": "wiki-nsp", "regression": "movie-scores", "multilabel": "wiki-ner-types"}
METRIC = {"pair": "accuracy", "regression": "pearson", "multilabel": "f1_micro"}
PROBLEM = {"pair": "single_label_classification", "regression": "regression",
           "multilabel": "multi_label_classification"}


def run_variant(spec: dict[str, Any]) -> dict[str, Any]:
    set_threads(spec["threads"])
    quiet_libraries()
    t0 = time.perf_counter()
    out = run_ours(spec) if spec["variant"] == "ours" else run_trainer(spec)
    out["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _splits(spec: dict[str, Any]) -> Any:
    from transferkit import tasks
    from transferkit.config.finetune import DataConfig
    return tasks.get(spec["task"]).prepare(DataConfig(data=DATA[spec["task"]], limit=spec["limit"]), spec["seed"])


def _score(task: str, y_true: Any, outputs: Any, names: list[str]) -> float:
    import numpy as np

    from transferkit.reporting.metrics import classification_metrics
    from transferkit.tasks.multilabel.metrics import multilabel_metrics
    from transferkit.tasks.regression.metrics import regression_metrics
    outputs = np.asarray(outputs, dtype=np.float64)
    if task == "pair":
        return classification_metrics(list(y_true), outputs.argmax(-1).tolist(), len(names))["accuracy"]
    if task == "regression":
        return regression_metrics(y_true, outputs, names)["pearson"]
    return multilabel_metrics(y_true, (outputs >= 0).astype(int), names)["f1_micro"]


def run_trainer(spec: dict[str, Any]) -> dict[str, Any]:
    """The stock recipe: AutoModelForSequenceClassification with its problem_type, Trainer, dynamic padding."""
    import datasets
    import numpy as np
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              PrinterCallback, Trainer, TrainingArguments, set_seed)

    from transferkit.modeling.resolve import resolve_model
    datasets.disable_progress_bars()
    task = spec["task"]
    splits = _splits(spec)
    names = splits.label_names
    path = resolve_model("minilm-l6").path
    tok = AutoTokenizer.from_pretrained(path)
    set_seed(spec["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(names), problem_type=PROBLEM[task], id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)})

    def dataset(part: Any) -> Dataset:
        texts = list(part.texts)
        if task == "pair":
            enc = tok([a for a, _ in texts], [b for _, b in texts], truncation=True, max_length=256)
        else:
            enc = tok(texts, truncation=True, max_length=256)
        labels = [list(map(float, y)) for y in part.labels] if task != "pair" else list(part.labels)
        return Dataset.from_dict({**enc, "labels": labels})

    train_ds, test_ds = dataset(splits.train), dataset(splits.test)
    with tempfile.TemporaryDirectory(prefix="tkbench-tasks-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, num_train_epochs=spec["epochs"], per_device_train_batch_size=spec["batch_size"],
            per_device_eval_batch_size=64, learning_rate=spec["lr"], warmup_steps=0.1, weight_decay=0.01,
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
            use_cpu=True, seed=spec["seed"], dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                          data_collator=DataCollatorWithPadding(tok))
        trainer.remove_callback(PrinterCallback)
        train_out = trainer.train()
        pred = trainer.predict(test_ds)
    m = train_out.metrics
    return {"samples_per_s": m["train_samples_per_second"], "train_seconds": m["train_runtime"],
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "test_metric": _score(task, list(splits.test.labels), np.asarray(pred.predictions), names),
            "train_rows": len(train_ds), "test_rows": len(test_ds)}


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    from transferkit import api
    task = spec["task"]
    result = api.finetune(task=task, data=DATA[task], limit=spec["limit"], method="full", epochs=spec["epochs"],
                          batch_size=spec["batch_size"], lr=spec["lr"], seed=spec["seed"], output_dir=spec["run_dir"],
                          **{"train.head_lr": spec["lr"], "train.progress": False, "train.min_steps": 0,
                             "train.early_stopping_patience": 0, "train.checkpoint_steps": 10**9})
    tr = result.metrics["train"]
    return {"samples_per_s": tr["samples_per_s"], "train_seconds": tr["seconds"], "peak_rss_mb": round(peak_rss_mb(), 1),
            "test_metric": result.metrics["test"][METRIC[task]], "train_rows": result.metrics["data"]["sizes"]["train"],
            "test_rows": result.metrics["data"]["sizes"]["test"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, "tasks")
    p.add_argument("--tasks", default="pair,regression,multilabel", help="comma-separated (default: all three)")
    p.add_argument("--limit", type=int, default=2000, help="training rows")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.quick:
        args.limit, args.epochs = min(args.limit, 200), min(args.epochs, 1.0)
    set_threads(args.threads)
    quiet_libraries()
    env = environment(args.threads)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tkbench-tasks-") as work:
        for task in args.tasks.split(","):
            for v in ("trainer", "ours"):
                print(f"{task}: running {v} in a child process ...", file=sys.stderr, flush=True)
                spec = {"variant": v, "task": task, "limit": args.limit, "epochs": args.epochs,
                        "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "threads": args.threads,
                        "run_dir": str(Path(work) / f"{task}-ours")}
                results[f"{task}/{v}"] = r = in_child(run_variant, spec)
                print(f"  {r['samples_per_s']:.1f} samples/s, test {METRIC[task]} {r['test_metric']:.4f}",
                      file=sys.stderr, flush=True)
    rows, ratios = [], {}
    for key, r in results.items():
        task = key.split("/")[0]
        rows.append([key, r["samples_per_s"], r["train_seconds"], r["peak_rss_mb"], METRIC[task],
                     f"{r['test_metric']:.4f}", r["wall_seconds"]])
        if key.endswith("/ours"):
            base = results[f"{task}/trainer"]
            ratios[task] = {"samples_per_s": ratio(r["samples_per_s"], base["samples_per_s"]),
                            "metric_points": round(100 * (r["test_metric"] - base["test_metric"]), 2)}
    print_table(["variant", "samples/s", "train s", "peak RSS MB", "metric", "test", "child wall s"], rows)
    for task, q in ratios.items():
        met = q["samples_per_s"] is not None and q["samples_per_s"] >= TARGET and q["metric_points"] >= 0
        print(f"{task}: ours / Trainer {q['samples_per_s']:.2f}x samples/s, {METRIC[task]} {q['metric_points']:+.2f} "
              f"points (target >= {TARGET:g}x and level or better: {'met' if met else 'NOT met'})")
    write_json(args.out, {"benchmark": "tasks", "quick": args.quick, "environment": env,
                          "settings": vars(args) | {"out": str(args.out)}, "results": results, "ratios": ratios,
                          "target": TARGET})
    return 0


if __name__ == "__main__":
    sys.exit(main())
