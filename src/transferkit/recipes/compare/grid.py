"""`transferkit compare --train-sizes 8,32,128 --seeds 3 --augment SPEC`: methods at several training-set
sizes, with and without augmentation, over several seeds: does augmentation or few-shot training
help on *this* data, and from which size on?

The data is split once as every run would split it (seeded, stratified). For each size n and seed
s, n training examples per class are drawn (seeded by s) from the training split and n per class
from the validation split (a user with n labelled examples per class has no large validation set
either); every cell is scored on the same test split (optionally a stratified sample of it,
`test_rows`). The samples are written as files under OUT/data/ and each cell trains as an ordinary
run in a process of its own (`comparison._run_child`), so an interrupted grid resumes where it stopped:

    OUT/data/n8-s42/{train,validation}.csv, OUT/data/test.csv
    OUT/<variant>/n8-s42/            a normal finetune run; variant = method or method+augmentation
    OUT/sizes.{md,csv,png}            mean and standard deviation over seeds; accuracy against size
    OUT/cells.csv                     one row per run

The cell seeds are `seed`, `seed+1`, ...; `seed_offset` k starts them at `seed+k` while the split and
the test sample stay those of `seed`, so a grid can be measured in parts (on another machine, or a
third seed later) and its cells are the ones the whole grid would have trained.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ... import tasks
from ...augmentation import parse_spec
from ...config.finetune import RunConfig
from ...core import fs, logs, runtime
from ...core.errors import UserError
from ...core.folders import read_json_object
from ...core.lock import RunLock
from ...data.fingerprint import data_fingerprints
from ...modeling.resolve import resolve_model

logger = logging.getLogger(__name__)

MAX_SEEDS = 20
MAX_SEED_OFFSET = 1000


@dataclass
class GridResult:
    output_dir: Path
    rows: list[dict[str, Any]]  # one per (variant, size): means and spreads
    cells: list[dict[str, Any]]  # one per run
    failed: list[str]
    markdown: str
    paths: dict[str, Path]


def parse_sizes(sizes: str | Sequence[int] | None) -> list[int | None]:
    """Per-class training sizes; None (or an empty list) means the whole training split."""
    if sizes is None:
        return [None]
    items = [s.strip() for s in sizes.split(",")] if isinstance(sizes, str) else list(sizes)
    out: list[int | None] = []
    for s in items:
        if s in ("", None):
            continue
        try:
            n = int(s)
        except (TypeError, ValueError):
            raise UserError(f"--train-sizes: {s!r} is not a whole number of examples per class") from None
        if not 1 <= n <= 1_000_000:
            raise UserError(f"--train-sizes: {n} must be in [1, 1000000] examples per class")
        out.append(n)
    if not out:
        raise UserError("--train-sizes: give at least one size (e.g. 8,32,128)")
    return sorted(set(out))


def augment_variants(augment: str | Sequence[str] | None) -> list[tuple[str, str]]:
    """(name, spec) per augmentation: the name is the spec's kinds (`eda`, `eda+mixup`)."""
    specs = [augment] if isinstance(augment, str) else list(augment or [])
    out = []
    for spec in specs:
        steps = parse_spec(spec)
        if not steps:
            raise UserError("--augment: an empty augmentation spec")
        name = "+".join(s.kind for s in steps)
        if name in [n for n, _ in out]:
            raise UserError(f"--augment: two augmentations named {name}; give each kind once")
        out.append((name, spec))
    return out


def _sample(split: Any, per_class: int | None, seed: int) -> tuple[list[str], list[int]]:
    """`per_class` rows of each label (all when fewer, or when None), in a seeded order."""
    idx = list(range(len(split.texts)))
    if per_class is not None:
        rng = random.Random(seed)
        rng.shuffle(idx)
        taken: dict[int, int] = {}
        keep = []
        for i in idx:
            y = split.labels[i]
            if taken.get(y, 0) < per_class:
                taken[y] = taken.get(y, 0) + 1
                keep.append(i)
        idx = keep
    return [split.texts[i] for i in idx], [split.labels[i] for i in idx]


def _write_csv(path: Path, texts: list[Any], labels: list[int], names: list[str], task: Any) -> None:
    """Sampled rows as a CSV in the task's columns (`Task.sample_columns`: text and label; a pair's two texts)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    text_columns, label_column = task.sample_columns
    w.writerow([*text_columns.split(","), label_column])
    w.writerows((*(t if isinstance(t, tuple) else (t,)), names[y]) for t, y in zip(texts, labels))
    fs.write_text(path, buf.getvalue())


def run_grid(methods: str | Sequence[str] | None, base: Any, output_dir: str | Path | None, *,
             train_sizes: str | Sequence[int] | None = None, seeds: int = 1,
             augment: str | Sequence[str] | None = None, augment_methods: str | Sequence[str] | None = None,
             test_rows: int | None = None, seed_offset: int = 0) -> GridResult:
    """Train every (method [+ augmentation], size, seed) cell and write the tables (see the module doc)."""
    from .run import _plan_config, _run_child, parse_methods
    runtime.setup()
    task = tasks.get(base.task)
    names = parse_methods(methods, task)
    variants = augment_variants(augment)
    aug_for = parse_methods(augment_methods) if augment_methods is not None else names
    if stray := [m for m in aug_for if m not in names]:
        raise UserError(f"--augment-methods names {stray[0]}, which is not among --methods ({', '.join(names)})")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise UserError(f"--seeds {seeds!r}: must be an integer in [1, {MAX_SEEDS}]")
    if isinstance(seed_offset, bool) or not isinstance(seed_offset, int) or not 0 <= seed_offset <= MAX_SEED_OFFSET:
        raise UserError(f"--seed-offset {seed_offset!r}: must be an integer in [0, {MAX_SEED_OFFSET}]")
    if test_rows is not None and (isinstance(test_rows, bool) or not isinstance(test_rows, int) or test_rows < 1):
        raise UserError(f"--test-rows {test_rows!r}: must be a positive integer")
    sizes = parse_sizes(train_sizes)
    sampled = sizes != [None] or test_rows is not None or seeds > 1 or seed_offset > 0
    if not task.one_label_per_example and sampled:
        raise UserError(f"--train-sizes, --seeds and --test-rows sample examples per class; {base.task} runs have "
                        "no one class per example (compare --augment alone works for them)")
    if base.data.augment:
        raise UserError("compare --augment runs each method with and without augmentation; leave data.augment unset")
    out = Path(output_dir or base.output_dir or "runs/compare")
    fs.check_writable_dir(out)
    resolve_model(base.model.name)
    with logs.quiet():  # each run's own process summarises its data
        splits = task.prepare(base.data, base.train.seed)
    label_names = list(splits.label_names)
    if sampled and not len(splits.validation):
        raise UserError("the validation split is empty; the grid samples its validation examples from it "
                        "(give a validation fraction in data.split or a validation file)")
    seed_list = [base.train.seed + seed_offset + k for k in range(seeds)]
    cells: list[tuple[str, str, int | None, int, Any]] = []  # (variant, method, size, seed, cfg)
    data_dir = out / "data"
    for size in sizes:
        for seed in seed_list:
            for method in names:
                for vname, spec in [("", None)] + (variants if method in aug_for else []):
                    cfg = RunConfig.from_dict(base.to_dict())
                    cfg.method.name = method
                    cfg.train.seed = seed
                    cfg.data.augment = spec
                    if sampled:
                        cell = _cell_name(size, seed)
                        cfg.data.data = None
                        cfg.data.text_column, cfg.data.label_column = task.sample_columns  # the sampled files' columns
                        cfg.data.train = str(data_dir / cell / "train.csv")
                        cfg.data.validation = str(data_dir / cell / "validation.csv")
                        cfg.data.test = str(data_dir / "test.csv")
                        cfg.data.limit = None
                    variant = method + (f"+{vname}" if vname else "")
                    cfg.output_dir = str(out / variant / _cell_name(size, seed))
                    cells.append((variant, method, size, seed, cfg))
    if sampled:  # before the cells' configs are compared: other data is the first thing to say
        _check_manifest(data_dir, base, test_rows)
    plans = [(_variant, size, seed, _plan_config(cfg, Path(cfg.output_dir), method,
                                                 key=f"{_variant}/{_cell_name(size, seed)}"))
             for _variant, method, size, seed, cfg in cells]
    logger.info(f"compare grid: {len(names)} method(s) x {len(sizes)} size(s) x {seeds} seed(s)"
                + (f" (+ {', '.join(v for v, _ in variants)} for {', '.join(aug_for)})" if variants else "")
                + f" = {len(plans)} runs -> {out} ({sum(p.state == 'finished' for *_, p in plans)} finished)")
    with RunLock(out, "compare", resume_hint="run the same transferkit compare command again"):
        if sampled:
            _check_manifest(data_dir, base, test_rows, write=True)
            _write_data(data_dir, splits, sizes, seed_list, test_rows, label_names, base.train.seed, task)
        statuses: dict[str, str] = {}
        for variant, size, seed, plan in plans:
            if plan.state == "finished":
                statuses[plan.key] = "ok"
                continue
            rc = _run_child(plan, out)
            ok = rc == 0 and (plan.run_dir / "metrics.json").is_file()
            statuses[plan.key] = "ok" if ok else f"failed (exit {rc})"
        cell_rows = [_cell_row(v, size, seed, p, statuses[p.key], task) for v, size, seed, p in plans]
        rows = aggregate(cell_rows, task)
        markdown, paths = _write_tables(out, rows, cell_rows, base, task, seeds, test_rows)
    failed = [k for k, st in statuses.items() if st != "ok"]
    logger.info("wrote " + ", ".join(str(p) for p in paths.values()))
    return GridResult(out, rows, cell_rows, failed, markdown, paths)


def _cell_name(size: int | None, seed: int) -> str:
    return f"{'all' if size is None else f'n{size}'}-s{seed}"


MANIFEST = "manifest.json"


def _check_manifest(data_dir: Path, base: Any, test_rows: int | None, write: bool = False) -> None:
    """OUT/data/ was sampled from this data (files by hash, split, dedupe, limit, seed, test rows), or is new.

    The cells' configs name the sampled files, not the source, so without this a grid rerun into the same
    folder with other data would silently reuse the old samples and runs."""

    wanted = {"data": {k: v for k, v in dataclasses.asdict(base.data).items() if k not in ("augment", "max_length")},
              "files": data_fingerprints(base.data), "seed": base.train.seed, "test_rows": test_rows, "task": base.task}
    path = data_dir / MANIFEST
    if path.is_file():
        have = read_json_object(path, "grid data record")
        diff = next((k for k in wanted if have.get(k) != json.loads(fs.dumps(wanted[k]))), None)
        if diff is not None:
            raise UserError(f"{data_dir} was sampled with other {diff} ({path}); use another --output-dir or "
                            "remove it")
        return
    if write:
        data_dir.mkdir(parents=True, exist_ok=True)
        fs.write_json(path, wanted)


def _test_sample(split: Any, rows: int | None, seed: int) -> tuple[list[str], list[int]]:
    """About `rows` test rows with the split's class shares (each class at least one row), seeded."""
    if rows is None or rows >= len(split.texts):
        return list(split.texts), list(split.labels)
    by: dict[int, list[int]] = {}
    for i, y in enumerate(split.labels):
        by.setdefault(y, []).append(i)
    rng = random.Random(seed)
    keep: list[int] = []
    for y, idx in sorted(by.items()):
        rng.shuffle(idx)
        keep += idx[:max(1, round(rows * len(idx) / len(split.texts)))]
    keep.sort()
    return [split.texts[i] for i in keep], [split.labels[i] for i in keep]


def _write_data(data_dir: Path, splits: Any, sizes: list[int | None], seeds: list[int], test_rows: int | None,
                names: list[str], base_seed: int, task: Any) -> None:
    """The sampled training/validation files of every cell, and the shared test file (kept when present)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "test.csv").is_file():
        _write_csv(data_dir / "test.csv", *_test_sample(splits.test, test_rows, base_seed), names, task)
    for size in sizes:
        for seed in seeds:
            folder = data_dir / _cell_name(size, seed)
            if (folder / "validation.csv").is_file():
                continue  # written by an earlier, interrupted grid: the cells already trained read it
            folder.mkdir(parents=True, exist_ok=True)
            texts, labels = _sample(splits.train, size, seed)
            if len(set(labels)) < 2:
                raise UserError(f"the training split has fewer than 2 classes at {size} per class")
            _write_csv(folder / "train.csv", texts, labels, names, task)
            _write_csv(folder / "validation.csv", *_sample(splits.validation, size, seed), names, task)


def _cell_row(variant: str, size: int | None, seed: int, plan: Any, status: str, task: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": variant, "method": plan.method, "size": size, "seed": seed, "status": status,
                           "run_dir": str(plan.run_dir)}
    if status == "ok":
        m = read_json_object(plan.run_dir / "metrics.json", "run metrics")
        row.update({key: m["test"][key] for key, *_ in task.compare_metrics})
        row.update(train_rows=(m["data"].get("augment") or {}).get("rows_after", m["data"]["sizes"]["train"]),
                   steps=m["train"]["steps"],
                   train_seconds=m["train"]["seconds"] + (m["train"].get("contrastive") or {}).get("seconds", 0.0))
    return row


def aggregate(cells: list[dict[str, Any]], task: Any) -> list[dict[str, Any]]:
    """One row per (variant, size): mean and sample standard deviation of each metric over the ok cells."""
    groups: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["variant"], c["size"]), []).append(c)
    rows = []
    for (variant, size), group in groups.items():
        ok = [c for c in group if c["status"] == "ok"]
        row: dict[str, Any] = {"variant": variant, "size": size, "seeds": len(ok), "failed": len(group) - len(ok)}
        for key, *_ in task.compare_metrics:
            values = [c[key] for c in ok]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        row["train_seconds"] = statistics.fmean([c["train_seconds"] for c in ok]) if ok else None
        rows.append(row)
    return rows


def _write_tables(out: Path, rows: list[dict[str, Any]], cells: list[dict[str, Any]], base: Any, task: Any,
                  seeds: int, test_rows: int | None) -> tuple[str, dict[str, Path]]:
    metrics = task.compare_metrics
    sizes = sorted({r["size"] for r in rows}, key=lambda s: -1 if s is None else s)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    by = {(r["variant"], r["size"]): r for r in rows}

    def cell(r: dict[str, Any] | None, key: str) -> str:
        if r is None or r.get(key) is None:
            return "failed" if r is not None else ""
        spread = f" ± {100 * r[key + '_std']:.1f}" if r["seeds"] > 1 else ""
        return f"{100 * r[key]:.1f}{spread}"
    size_names = ["all" if s is None else f"{s}/class" for s in sizes]
    lines = [f"# transferkit compare: {base.data.data or base.data.train} on {base.model.name}, by training size", "",
             f"Test {metrics[0][2]} (%) and {metrics[1][2] if len(metrics) > 1 else ''}: mean ± standard deviation over "
             f"{seeds} seed(s) (each seed draws its own training and validation examples and trains with that seed); "
             f"test split {'all rows' if test_rows is None else f'a stratified sample of about {test_rows} rows'}.", ""]
    for key, title, _ in metrics:
        lines += [f"## {title}", "", "| variant | " + " | ".join(size_names) + " |",
                  "|---|" + "---:|" * len(sizes)]
        lines += [f"| {v} | " + " | ".join(cell(by.get((v, s)), key) for s in sizes) + " |" for v in variants]
        lines.append("")
    markdown = "\n".join(lines)
    paths = {"md": out / "sizes.md", "csv": out / "sizes.csv", "cells": out / "cells.csv", "png": out / "sizes.png"}
    fs.write_text(paths["md"], markdown)
    fs.write_text(paths["csv"], _csv(rows))
    fs.write_text(paths["cells"], _csv(cells))
    fs.write_bytes(paths["png"], plot_sizes(rows, variants, metrics[0], str(base.data.data or base.data.train)))
    return markdown, paths


def _csv(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def plot_sizes(rows: list[dict[str, Any]], variants: list[str], metric: tuple[str, str, str], title: str) -> bytes:
    """PNG of `metric` against training size (log 2 axis), one line with error bars per variant."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    key = metric[0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in variants:
        pts = sorted((r["size"], r[key], r[f"{key}_std"]) for r in rows
                     if r["variant"] == v and r["size"] is not None and r.get(key) is not None)
        if pts:
            ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                        marker="o", capsize=3, label=v)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training examples per class")
    ax.set_ylabel(f"test {metric[2]} (%)")
    ax.set_title(f"transferkit compare: {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
