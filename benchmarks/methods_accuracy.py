"""Test accuracy and training time of each method with its defaults on the bundled movie sentences.

    .venv/bin/python benchmarks/methods_accuracy.py [--methods full,lora,head_only] [--out-dir runs/accuracy]

Each method runs as `transferkit finetune --method M --seed 42` (full 80/10/10 split, per-method
default lr/epochs/early stopping); the table lists test accuracy/F1, epochs actually run,
training seconds (loop only) and wall seconds (whole command, model loading and evaluation included).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="full,lora,head_only")
    ap.add_argument("--out-dir", default="runs/accuracy")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="benchmarks/results/methods_accuracy.json")
    args = ap.parse_args()
    exe = str(Path(sys.executable).with_name("transferkit"))
    rows = []
    for m in args.methods.split(","):
        run = Path(args.out_dir) / m
        cmd = [exe, "finetune", "--method", m, "--seed", str(args.seed), "--output-dir", str(run), "train.progress=false"]
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        met = json.loads((run / "metrics.json").read_text())
        rows.append({"method": m, "accuracy": met["test"]["accuracy"], "f1": met["test"]["f1"],
                     "epochs": met["train"]["epochs"], "train_seconds": met["train"]["seconds"],
                     "wall_seconds": round(wall, 1), "lr": met["train"]["lr"],
                     "trainable": met["params"]["trainable"], "command": " ".join(cmd[1:])})
    print("\n| method | test accuracy | test F1 | epochs run | training s | wall s | trainable params |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['accuracy']:.1%} | {r['f1']:.1%} | {r['epochs']:.2f} | {r['train_seconds']:.0f} "
              f"| {r['wall_seconds']:.0f} | {r['trainable']:,} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
