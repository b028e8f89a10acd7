"""The table `transferkit compare` writes: markdown, CSV and a plot, from one row per method.

A row is a dict built by `comparison._row` (parameters, memory, speed, size, and the test metrics
the run's task names in `compare_metrics`: accuracy and macro F1, or entity F1 and token accuracy);
missing figures (a failed method) render as empty cells.
"""
from __future__ import annotations

import csv
import io
import os
import platform
from pathlib import Path
from typing import Any

from ..config.finetune import RunConfig
from ..core import fs
from ..core.registry import METHODS

Metrics = tuple[tuple[str, str, str], ...]  # the task's compare_metrics: (metrics.json key, column title, name)


def csv_fields(metrics: Metrics) -> list[str]:
    return ["model", "method", "status", "trainable", "total", "trainable_pct", "peak_rss_mb", "rss_before_train_mb",
            "peak_gpu_mb", "train_seconds", "samples_per_s", "wall_seconds", "inference_per_s", "artifact_mb",
            "weights_mb", *[m[0] for m in metrics], f"predictor_{metrics[0][0]}", "steps", "epochs", "lr", "run_dir"]


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "" if v is None else format(v * scale if scale != 1 else v, spec)


def _added(r: dict[str, Any]) -> float | None:
    """Memory the training itself added: peak minus the resident memory just before it."""
    if r.get("peak_rss_mb") is None or r.get("rss_before_train_mb") is None:
        return None
    return r["peak_rss_mb"] - r["rss_before_train_mb"]


def _less(ratio: float) -> str:
    return f"{100 * (1 - ratio):.0f}% lower" if ratio <= 1 else f"{100 * (ratio - 1):.0f}% higher"


def _mb(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def label(r: dict[str, Any]) -> str:
    """How a row is named: its method, after its model where the table compares models."""
    return f"{r['model']} {r['method']}" if r.get("model") else r["method"]


def _trains_encoder(method: str) -> bool:
    """Whether `method` is full fine-tuning (`Method.trains_encoder`), the row the others are measured against."""
    return method in METHODS and METHODS.get(method).trains_encoder


def _versus_full(rows: list[dict[str, Any]], metrics: Metrics) -> list[str]:
    """One line per method against full fine-tuning of the same model: the textbook claims, measured."""
    key = metrics[0][0]
    fulls = {r.get("model"): r for r in reversed(rows) if _trains_encoder(r["method"]) and r.get(key) is not None}
    if not fulls:
        return []
    lines = ["", "Against full fine-tuning (same data, seed and budget):", ""]
    for r in rows:
        full = fulls.get(r.get("model"))
        if full is None or r is full or r.get(key) is None:
            continue
        parts = [f"{r['trainable_pct']:.2f}% of the parameters train",
                 f"{metrics[0][2]} {100 * (r[key] - full[key]):+.1f} points"]
        if r.get("samples_per_s") and full.get("samples_per_s"):
            ratio = r["samples_per_s"] / full["samples_per_s"]
            parts.append(f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.0f}x")
            parts[-1] += " the training samples/s"
        if r.get("peak_rss_mb") and full.get("peak_rss_mb"):
            parts.append("peak memory " + _less(r["peak_rss_mb"] / full["peak_rss_mb"]))
        if _added(r) is not None and _added(full):
            parts.append("memory added by training " + _less(_added(r) / _added(full)))
        if r.get("artifact_mb") and full.get("artifact_mb"):
            parts.append(f"artefact {_mb(r['artifact_mb'])} MB vs {_mb(full['artifact_mb'])} MB")
        lines.append(f"- {label(r)}: " + "; ".join(parts))
    return lines


def _by_model(rows: list[dict[str, Any]], metrics: Metrics) -> list[str]:
    """Where the table compares models: each model's best method, best first."""
    key, name = metrics[0][0], metrics[0][2]
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("model") and r.get(key) is not None and (r["model"] not in best or r[key] > best[r["model"]][key]):
            best[r["model"]] = r
    if len(best) < 2:
        return []
    ranked = sorted(best.values(), key=lambda r: -r[key])
    return ["", f"Models by their best {name}:", ""] + [
        f"{i}. {r['model']}: {100 * r[key]:.1f}% with {r['method']} ({r.get('train_seconds') or 0:.0f} s of training, "
        f"peak {r.get('peak_rss_mb') or 0:.0f} MB)" for i, r in enumerate(ranked, 1)]


def command(rows: list[dict[str, Any]], base: Any) -> str:
    """The CLI line that repeats this comparison: every config key that differs from the default."""
    default, wanted = flat_config(RunConfig().to_dict()), flat_config(base.to_dict())
    def text(v: Any) -> str:
        return ",".join(map(text, v)) if isinstance(v, list) else f"{v:g}" if isinstance(v, float) else str(v)
    keys = [f"{k}={text(v)}" for k, v in wanted.items() if k not in ("output_dir", "method.name") and v != default.get(k)]
    out = str(Path(rows[0]["run_dir"]).parent) if rows else "runs/compare"
    models = list(dict.fromkeys(r["model"] for r in rows if r.get("model")))
    if models:
        keys = [k for k in keys if not k.startswith("model.name=")]
        out = str(Path(out).parent)
    return " ".join(["transferkit compare --methods", ",".join(dict.fromkeys(r["method"] for r in rows)),
                     *(["--models", ",".join(models)] if models else []), *keys, "--output-dir", out])


def flat_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": x}} -> {"train.lr": x}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat_config(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def render_markdown(rows: list[dict[str, Any]], base: Any, n_train: int, n_test: int, repeats: int,
                    metrics: Metrics) -> str:

    import torch
    budget = (f"max {base.train.max_steps} steps" if base.train.max_steps else
              f"{base.train.epochs:g} epoch(s)" if base.train.epochs else "each method's default epochs")
    lr = f"lr {base.train.lr:g} for all" if base.train.lr else "each method at its default learning rate"
    models = ", ".join(dict.fromkeys(r["model"] for r in rows if r.get("model"))) or base.model.name
    head = [f"# transferkit compare: {base.data.data or base.data.train} on {models}", "",
            f"`{command(rows, base)}`", "",
            (f"{n_train:,} training / {n_test:,} test texts, seed {base.train.seed}, {budget}, {lr}. "
             f"{os.cpu_count()} CPUs, torch {torch.__version__} ({platform.machine()}), "
             f"{'CUDA' if torch.cuda.is_available() else 'CPU'}; methods trained one after another, each in its "
             f"own process."), ""]
    cols = [*(["model"] if any(r.get("model") for r in rows) else []), "method", "trainable params", "trainable %", "peak MB", "training adds MB", "train s", "samples/s",
            "wall s", "infer sent/s", "artefact MB", "lr", "steps", *[m[1] for m in metrics]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    for r in rows:
        first = [r["model"], r["method"]] if cols[0] == "model" else [r["method"]]
        if r["status"] != "ok" and r.get(metrics[0][0]) is None:
            lines.append("| " + " | ".join([*first, r["status"]]) + " |" + " |" * (len(cols) - len(first) - 1))
            continue
        cells = [*first, _fmt(r.get("trainable"), ","), _fmt(r.get("trainable_pct"), ".2f"),
                 _fmt(r.get("peak_rss_mb"), ".0f"), _fmt(_added(r), ".0f"), _fmt(r.get("train_seconds"), ".1f"),
                 _fmt(r.get("samples_per_s"), ".1f"), _fmt(r.get("wall_seconds"), ".0f"),
                 _fmt(r.get("inference_per_s"), ".0f"), ("" if r.get("artifact_mb") is None else _mb(r["artifact_mb"])), _fmt(r.get("lr"), "g"),
                 _fmt(r.get("steps"), "d"), *[_fmt(r.get(m[0]), ".1f", 100) for m in metrics]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", (f"peak MB: peak resident memory of the method's training process; training adds MB: that peak "
                   f"minus the resident memory just before training. train s and samples/s: optimizer steps only; "
                   f"wall s: the whole process (loading, head_only's one-off feature encoding, evaluation, saving). "
                   f"infer sent/s: `Predictor.from_run` (adapters merged where they can be), batch 64, over the "
                   f"test texts, median of {repeats} passes, all methods timed back to back in one process. "
                   f"artefact MB: the saved model/ or adapter/ folder, tokenizer files included.")]
    notes = [r for r in rows if r["status"] != "ok"]
    tail = [""] + [f"- {label(r)}: {r['status']}" for r in notes] if notes else []
    return "\n".join(head + lines + _by_model(rows, metrics) + _versus_full(rows, metrics) + tail) + "\n"


def render_csv(rows: list[dict[str, Any]], metrics: Metrics) -> str:
    buf = io.StringIO()
    fields = csv_fields(metrics)
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in fields} for r in rows)
    return buf.getvalue()


def render_png(rows: list[dict[str, Any]], title: str, metrics: Metrics) -> bytes:
    """The ranked metric against trainable parameters, training speed and peak memory, one panel each."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    key, name = metrics[0][0], metrics[0][2]
    ok = [r for r in rows if r.get(key) is not None]
    names = [label(r) for r in ok]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for r in ok:
        ax.scatter(max(r["trainable"], 1), 100 * r[key], s=40)
        ax.annotate(label(r), (max(r["trainable"], 1), 100 * r[key]), textcoords="offset points",
                    xytext=(5, 4), fontsize=9)
    ax.set(xscale="log", xlabel="trainable parameters (log)", ylabel=f"test {name} (%)", title=name)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3)
    # Optimizer steps, then everything else the process did (head_only's feature encoding sits there).
    steps = [r.get("train_seconds") or 0 for r in ok]
    axes[1].barh(names, steps, color="tab:green", label="optimizer steps")
    axes[1].barh(names, [max((r.get("wall_seconds") or 0) - s, 0) for r, s in zip(ok, steps)], left=steps,
                 color="tab:olive", label="rest of the process")
    axes[1].set(xlabel="seconds", title="training time")
    before = [r.get("rss_before_train_mb") or 0 for r in ok]
    axes[2].barh(names, before, color="tab:gray", label="before training")
    axes[2].barh(names, [max((r.get("peak_rss_mb") or 0) - b, 0) for r, b in zip(ok, before)], left=before,
                 color="tab:red", label="added by training (peak)")
    axes[2].set(xlabel="process memory (MB)", title="peak memory")
    for a in axes[1:]:
        a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
        a.invert_yaxis()
        a.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_tables(out: Path, rows: list[dict[str, Any]], base: Any, splits: Any, repeats: int, metrics: Metrics,
                 n_train: int, n_test: int) -> tuple[str, dict[str, Path]]:
    """Write OUT/compare.md, .csv and .png atomically; returns the markdown and the paths."""
    sizes = splits.summary.get("sizes", {})
    markdown = render_markdown(rows, base, sizes.get("train", n_train), sizes.get("test", n_test), repeats, metrics)
    paths = {"md": out / "compare.md", "csv": out / "compare.csv", "png": out / "compare.png"}
    out.mkdir(parents=True, exist_ok=True)
    fs.write_bytes(paths["md"], markdown.encode())
    fs.write_bytes(paths["csv"], render_csv(rows, metrics).encode())
    fs.write_bytes(paths["png"], render_png(rows, f"transferkit compare: {base.data.data or base.data.train}", metrics))
    return markdown, paths


