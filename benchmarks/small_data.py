"""Small and imbalanced data: every method's default before and after the adaptive defaults.

    .venv/bin/python benchmarks/small_data.py [--dataset tweets-3class] [--rows 600] [--methods ...]
    .venv/bin/python benchmarks/small_data.py --dataset bbc-news --imbalance 0.6   (a skewed topic sample)

A stratified sample of `--rows` rows (seed 0; with --imbalance F the first class is F of the rows and
the rest share the remainder) is written to OUT/data.csv, then `transferkit compare` runs twice on it
with the same split and seed:
  before   train.min_steps=0 train.metric=accuracy   (the defaults as they were: the method's epochs,
                                                      early stopping on accuracy)
  after    the defaults                              (at least 300 optimizer steps, f1_macro when the
                                                      classes are imbalanced)
and the table gives test accuracy and macro-F1 of both, with the optimizer steps each took.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def sample(dataset: str, rows: int, imbalance: float | None, out: Path) -> dict[str, int]:
    from transferkit.tasks.classify.read import load_table
    from transferkit.data.split import dedupe
    table = load_table(dataset)
    texts, labels, _ = dedupe(table.texts, table.labels)
    by: dict[str, list[str]] = defaultdict(list)
    for t, y in zip(texts, labels):
        by[str(y)].append(t)
    names = sorted(by)
    if imbalance is None:
        want = {y: round(rows * len(by[y]) / len(texts)) for y in names}
    else:
        rest = (1 - imbalance) / (len(names) - 1)
        want = {y: round(rows * (imbalance if i == 0 else rest)) for i, y in enumerate(names)}
    rng = random.Random(0)
    picked = []
    for y in names:
        pool = list(by[y])
        rng.shuffle(pool)
        picked += [(t, y) for t in pool[:want[y]]]
    rng.shuffle(picked)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(picked)
    return {y: min(want[y], len(by[y])) for y in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="tweets-3class")
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--imbalance", type=float, help="share of the first class (default: the dataset's own shares)")
    ap.add_argument("--methods", default="full,lora,adapter,prefix,ia3,bitfit,head_only")
    ap.add_argument("--out-dir", type=Path, default=Path("runs/small_data"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/small_data.json"))
    args = ap.parse_args()
    import transferkit
    from transferkit import api
    transferkit.log_to_stderr()  # each run's progress lines, as the CLI prints them
    data = args.out_dir / "data.csv"
    counts = sample(args.dataset, args.rows, args.imbalance, data)
    print(f"{args.dataset}: {sum(counts.values())} rows {counts} -> {data}", file=sys.stderr)
    results = {}
    for name, extra in (("before", {"train.min_steps": 0, "train.metric": "accuracy"}), ("after", {})):
        res = api.compare(args.methods, data=str(data), output_dir=args.out_dir / name, inference_repeats=1,
                          **{"train.progress": False, **extra})
        results[name] = {r["method"]: {k: r.get(k) for k in ("accuracy", "f1_macro", "steps", "epochs", "status")}
                         for r in res.rows}
    lines = [f"{args.dataset}, {sum(counts.values())} rows {counts}", "",
             "| method | accuracy before | accuracy after | macro-F1 before | macro-F1 after | steps before | steps after |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m in args.methods.split(","):
        b, a = results["before"].get(m, {}), results["after"].get(m, {})

        def pct(v):
            return "" if v is None else f"{100 * v:.1f}"
        lines.append(f"| {m} | {pct(b.get('accuracy'))} | {pct(a.get('accuracy'))} | {pct(b.get('f1_macro'))} | "
                     f"{pct(a.get('f1_macro'))} | {b.get('steps') or ''} | {a.get('steps') or ''} |")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dataset": args.dataset, "rows": counts, "results": results,
                                    "table": lines}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
