"""One table from a size grid measured in parts: the cells.csv of several `compare --train-sizes` folders.

A grid's cell depends only on its variant, size and seed (and the split and test sample of the grid's
--seed), so parts measured on different machines or days (`--seed-offset` for a later seed) add up to
the grid one command would have run. This reads each folder's cells.csv and stops when the parts were not
one grid: folders whose sizes.md names other data, model or test sample, or two copies of one cell that
disagree. It prints test accuracy and macro-F1, mean ± standard deviation over the seeds, as `compare`
would have; `--png` plots accuracy against size.

    .venv/bin/python benchmarks/sizes_table.py benchmarks/results/sizes_movie* --png /tmp/movie.png
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from transferkit import tasks
from transferkit.recipes.compare.grid import aggregate, plot_sizes

ORDER = ["head_only", "lora", "lora+eda", "lora+mixup", "lora+paraphrase", "full", "setfit", "setfit+eda"]
NUMBERS = ("accuracy", "f1_macro", "train_seconds")


def grid_header(folder: Path) -> list[str]:
    """The lines of sizes.md that name the data, model and test sample (not the seed count)."""
    if not (folder / "sizes.md").is_file() or not (folder / "cells.csv").is_file():
        sys.exit(f"sizes_table: {folder} is not a compare --train-sizes folder (no sizes.md and cells.csv)")
    lines = (folder / "sizes.md").read_text(encoding="utf-8").splitlines()
    return [lines[0], lines[2].split(": mean")[0], lines[2].rsplit("; ", 1)[-1]]


def read_cells(folders: list[Path]) -> list[dict]:
    cells: dict[tuple[str, int | None, int], dict] = {}
    first = None
    for folder in folders:
        header = grid_header(folder)
        first = first or header
        if header != first:
            sys.exit(f"sizes_table: {folder} is another grid than {folders[0]}: {header} against {first}")
        path = folder / "cells.csv"
        with path.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["status"] != "ok":
                    continue
                size = int(row["size"]) if row["size"] else None  # empty: a grid over the whole split
                cell = {"variant": row["variant"], "size": size, "seed": int(row["seed"]), "status": "ok",
                        **{k: float(row[k]) for k in NUMBERS}}
                key = (cell["variant"], cell["size"], cell["seed"])
                seen = cells.get(key)
                if seen and (seen["accuracy"], seen["f1_macro"]) != (cell["accuracy"], cell["f1_macro"]):
                    sys.exit(f"sizes_table: {path}: {key} has accuracy {cell['accuracy']} here and "
                             f"{seen['accuracy']} in {seen['from']}: not the same grid")
                cells.setdefault(key, {**cell, "from": path})
    return list(cells.values())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="compare --train-sizes output folders (with cells.csv)")
    p.add_argument("--png", type=Path, help="also plot accuracy against training size to this file")
    p.add_argument("--title", default="by training size")
    args = p.parse_args(argv)
    task = tasks.get("classify")
    cells = read_cells(args.folders)
    rows = aggregate(cells, task)
    sizes = sorted({r["size"] for r in rows}, key=lambda s: -1 if s is None else s)
    present = {r["variant"] for r in rows}
    variants = [v for v in ORDER if v in present] + sorted(present - set(ORDER))
    by = {(r["variant"], r["size"]): r for r in rows}
    for key, title, _ in task.compare_metrics:
        print(f"\n{title}, mean ± standard deviation (seeds)\n")
        print("| variant | " + " | ".join("all" if s is None else f"{s}/class" for s in sizes) + " |")
        print("|---|" + "---:|" * len(sizes))
        for v in variants:
            out = []
            for s in sizes:
                r = by.get((v, s))
                out.append("-" if r is None else f"{100 * r[key]:.1f} ± {100 * r[key + '_std']:.1f} ({r['seeds']})")
            print(f"| {v} | " + " | ".join(out) + " |")
    if args.png:
        args.png.write_bytes(plot_sizes(rows, variants, task.compare_metrics[0], args.title))
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
