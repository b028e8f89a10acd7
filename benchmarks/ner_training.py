"""NER training: the Hugging Face `run_ner.py` recipe vs `transferkit finetune --task ner`, in one invocation.

Both train the bundled MiniLM-L6 on the same sentences (transferkit's seeded split of the data),
the same epochs, batch size and learning rate, each in its own spawned child process:

    run_ner   AutoModelForTokenClassification + Trainer + DataCollatorForTokenClassification (dynamic
              padding), labels on the first sub-token of each word (-100 elsewhere), truncation at 128
    ours      transferkit.api.finetune(task="ner"): the same labelling, length-grouped batches,
              overlapping windows instead of truncation, fused AdamW

Both are scored the same way: word-level tags from the first sub-token, seqeval entity F1 in strict
IOB2 mode on the test split. Throughput is training-only (Trainer's train_samples_per_second and
transferkit's train.samples_per_s; samples are sentences for the baseline and windows for ours,
the same number here unless a sentence exceeds the window).

    python benchmarks/ner_training.py --data wiki-ner-silver --limit 3000 --epochs 1
    python benchmarks/ner_training.py --quick
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

TARGET = 1.2  # ours / run_ner samples/s


def _data_cfg(spec: dict[str, Any]) -> Any:
    from transferkit.config.finetune import DataConfig
    return DataConfig(data=spec["data"], limit=spec["limit"])


def run_variant(spec: dict[str, Any]) -> dict[str, Any]:
    set_threads(spec["threads"])
    quiet_libraries()
    t0 = time.perf_counter()
    out = run_ours(spec) if spec["variant"] == "ours" else run_hf(spec)
    out["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def run_hf(spec: dict[str, Any]) -> dict[str, Any]:
    """The run_ner.py recipe: tokenize words, label first sub-tokens, Trainer with the token collator."""
    import datasets
    import numpy as np
    from datasets import Dataset
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              PrinterCallback, Trainer, TrainingArguments, set_seed)

    from transferkit.tasks.ner.splits import prepare_tagged_splits
    from transferkit.modeling.resolve import resolve_model
    from transferkit.tasks.ner.task import entity_metrics
    datasets.disable_progress_bars()
    splits = prepare_tagged_splits(_data_cfg(spec), spec["seed"])
    names = splits.label_names
    path = resolve_model("minilm-l6").path
    tok = AutoTokenizer.from_pretrained(path)
    set_seed(spec["seed"])
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})

    def encode(batch: dict[str, list]) -> dict[str, list]:
        enc = tok(batch["tokens"], is_split_into_words=True, truncation=True, max_length=128)
        labels = []
        for i, tags in enumerate(batch["tags"]):
            prev, row = None, []
            for w in enc.word_ids(i):
                row.append(-100 if w is None or w == prev else tags[w])
                prev = w
            labels.append(row)
        enc["labels"] = labels
        return enc

    def dataset(part: Any) -> Dataset:
        return Dataset.from_dict({"tokens": part.tokens, "tags": part.tags}).map(
            encode, batched=True, remove_columns=["tokens", "tags"])

    train_ds, test_ds = dataset(splits.train), dataset(splits.test)
    with tempfile.TemporaryDirectory(prefix="tkbench-ner-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, num_train_epochs=spec["epochs"], per_device_train_batch_size=spec["batch_size"],
            per_device_eval_batch_size=64, learning_rate=spec["lr"], warmup_steps=0.1, weight_decay=0.01,
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
            use_cpu=True, seed=spec["seed"], dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                          data_collator=DataCollatorForTokenClassification(tok))
        trainer.remove_callback(PrinterCallback)
        train_out = trainer.train()
        pred = trainer.predict(test_ds)
    logits = np.asarray(pred.predictions)  # [n, seq, tags], padded
    gold, guess = [], []
    for i in range(len(test_ds)):
        keep = np.asarray(pred.label_ids[i]) != -100
        gold.append([names[t] for t in np.asarray(pred.label_ids[i])[keep]])
        guess.append([names[t] for t in logits[i].argmax(-1)[keep]])
    m = train_out.metrics
    return {"samples_per_s": m["train_samples_per_second"], "train_seconds": m["train_runtime"],
            "peak_rss_mb": round(peak_rss_mb(), 1), "test_f1": entity_metrics(gold, guess)["f1"],
            "test_sentences": len(test_ds), "train_sentences": len(train_ds)}


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    from transferkit import api
    result = api.finetune(task="ner", data=spec["data"], limit=spec["limit"], method="full", epochs=spec["epochs"],
                          batch_size=spec["batch_size"], lr=spec["lr"], seed=spec["seed"], output_dir=spec["run_dir"],
                          **{"train.head_lr": spec["lr"], "train.progress": False,
                             "train.early_stopping_patience": 0, "train.checkpoint_steps": 10**9})
    rss = peak_rss_mb()
    tr = result.metrics["train"]
    return {"samples_per_s": tr["samples_per_s"], "train_seconds": tr["seconds"], "peak_rss_mb": round(rss, 1),
            "test_f1": result.metrics["test"]["f1"], "test_sentences": result.metrics["data"]["sizes"]["test"],
            "train_sentences": result.metrics["data"]["sizes"]["train"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, "ner_training")
    p.add_argument("--data", default="wiki-ner-silver", help="tagged data (bundled name or file)")
    p.add_argument("--limit", type=int, default=3000, help="training sentences")
    p.add_argument("--epochs", type=float, default=1.0)
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
    with tempfile.TemporaryDirectory(prefix="tkbench-ner-") as work:
        for v in ("run_ner", "ours"):
            print(f"running {v} in a child process ...", file=sys.stderr, flush=True)
            spec = {"variant": v, "data": args.data, "limit": args.limit, "epochs": args.epochs,
                    "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "threads": args.threads,
                    "run_dir": str(Path(work) / "ours-run")}
            results[v] = in_child(run_variant, spec)
            print(f"  {v}: {results[v]['samples_per_s']:.1f} samples/s, test entity F1 {results[v]['test_f1']:.4f}",
                  file=sys.stderr, flush=True)
    print_table(["variant", "samples/s", "train s", "peak RSS MB", "test entity F1", "child wall s"],
                [[v, r["samples_per_s"], r["train_seconds"], r["peak_rss_mb"], f"{r['test_f1']:.4f}",
                  r["wall_seconds"]] for v, r in results.items()])
    r = ratio(results["ours"]["samples_per_s"], results["run_ner"]["samples_per_s"])
    points = round(100 * (results["ours"]["test_f1"] - results["run_ner"]["test_f1"]), 2)
    print(f"\nours / run_ner: {r:.2f}x samples/s (target >= {TARGET:g}x: {'met' if r >= TARGET else 'NOT met'}), "
          f"entity F1 {points:+.2f} points")
    write_json(args.out, {"benchmark": "ner_training", "quick": args.quick, "environment": env,
                          "settings": vars(args) | {"out": str(args.out)}, "results": results,
                          "ratios": {"samples_per_s": r, "f1_points": points, "target": TARGET,
                                     "met": r is not None and r >= TARGET}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
