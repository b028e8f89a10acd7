"""Evaluation artefacts: evaluation.json, two PNG plots and one self-contained report.html.

Every file is written to a temporary name in the target folder and moved into place with
`os.replace`, so a reader (or a crashed run) never sees a half-written file. The HTML page
embeds its images as base64 data URIs and carries its CSS inline: it can be mailed or
archived on its own and opens without network access.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

# Agg must be selected before pyplot is imported: evaluation runs on headless machines and
# must never try to open a window.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..core import fs  # noqa: E402
from .metrics import HEADLINE_KEYS, average_mode  # noqa: E402

EVALUATION_JSON = "evaluation.json"
CONFUSION_PNG = "confusion_matrix.png"
LOSS_PNG = "loss_curves.png"
REPORT_HTML = "report.html"

_MAX_TICK_CHARS = 20  # longer label names are cut in plot ticks so the axes stay legible
_MAX_HTML_TEXT = 1000  # example texts in the HTML table are cut; evaluation.json keeps them whole
_DPI = 110


def _atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through the one atomic writer; the previous version stays until the swap."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fs.write_bytes(path, data)
    return path


def _jsonable(value: Any) -> Any:
    """Convert numpy types and paths to JSON types; NaN/inf become null so the JSON is strict."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _tick_label(name: str) -> str:
    """Shorten a label name and escape `$` so matplotlib does not parse it as mathtext."""
    if len(name) > _MAX_TICK_CHARS:
        name = name[: _MAX_TICK_CHARS - 1] + "\u2026"
    return name.replace("$", r"\$")


def _figure_png(fig: Any) -> bytes:
    """Render a figure to PNG bytes and release it."""
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


def confusion_matrix_png(cm: Sequence[Sequence[int]], label_names: Sequence[str]) -> bytes:
    """PNG of a confusion matrix (rows = true, columns = predicted), coloured by row fraction."""
    counts = np.asarray(cm, dtype=np.int64)
    n = len(label_names)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix has shape {counts.shape}, expected ({n}, {n}) for {n} labels")
    # Colour by the fraction of each true class so small classes are as readable as big ones.
    row_sums = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_sums, out=np.zeros(counts.shape, dtype=float), where=row_sums > 0)

    side = float(min(max(4.5, 0.55 * n + 2.5), 22.0))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("fraction of true class")

    ticks = [_tick_label(str(name)) for name in label_names]
    ax.set_xticks(range(n), labels=ticks, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels=ticks)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title("Confusion matrix")
    if n <= 30:  # beyond this the numbers overlap and only the colours are informative
        fontsize = 11 if n <= 10 else 8
        for i in range(n):
            for j in range(n):
                colour = "white" if fractions[i, j] > 0.5 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=fontsize)
    return _figure_png(fig)


def _running_mean(values: np.ndarray) -> np.ndarray:
    """Trailing running mean with a window of about a tenth of the points (at most 50)."""
    window = max(1, min(50, len(values) // 10))
    if window == 1:
        return values
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values, dtype=float)
    # The first points average over what exists so far instead of being dropped.
    for i in range(min(window, len(values))):
        out[i] = cumsum[i + 1] / (i + 1)
    out[window:] = (cumsum[window + 1 :] - cumsum[1:-window]) / window
    return out


def _series(
    history: Sequence[Mapping[str, Any]], keep: Callable[[Mapping[str, Any]], bool], key: str
) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `key` over the records that `keep` accepts, skipping missing/non-finite values."""
    steps: list[float] = []
    values: list[float] = []
    for record in history:
        if not keep(record):
            continue
        step, value = record.get("step"), record.get(key)
        if isinstance(step, (int, float)) and isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(float(step))
            values.append(float(value))
    order = np.argsort(steps, kind="stable")
    return np.asarray(steps)[order], np.asarray(values)[order]


def _is_train(record: Mapping[str, Any]) -> bool:
    return record.get("type") == "train"


def _is_validation(record: Mapping[str, Any]) -> bool:
    return record.get("type") == "eval" and record.get("split", "validation") == "validation"


def loss_curves_png(history: Sequence[Mapping[str, Any]]) -> bytes:
    """PNG of training loss (raw and running mean), validation loss and validation accuracy vs step."""
    train_steps, train_loss = _series(history, _is_train, "loss")
    val_steps, val_loss = _series(history, _is_validation, "loss")
    acc_steps, val_acc = _series(history, _is_validation, "accuracy")

    fig, ax = plt.subplots(figsize=(8.0, 4.5))
    if not (train_steps.size or val_steps.size or acc_steps.size):
        ax.text(0.5, 0.5, "no training history", ha="center", va="center", fontsize=14, color="grey",
                transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("Loss curves")
        return _figure_png(fig)

    handles = []
    if train_steps.size:
        marker = "o" if train_steps.size < 20 else None
        if train_steps.size >= 20:
            ax.plot(train_steps, train_loss, color="tab:blue", alpha=0.25, linewidth=0.8)
        handles += ax.plot(train_steps, _running_mean(train_loss), color="tab:blue", marker=marker,
                           linewidth=1.8,
                           label="training loss" if marker else "training loss (running mean)")
    if val_steps.size:
        handles += ax.plot(val_steps, val_loss, color="tab:orange", marker="o", linewidth=1.8,
                           label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    if acc_steps.size:
        acc_ax = ax.twinx()
        handles += acc_ax.plot(acc_steps, val_acc, color="tab:green", marker="s", linestyle="--",
                               linewidth=1.5, label="validation accuracy")
        acc_ax.set_ylabel("accuracy")
        acc_ax.set_ylim(0.0, 1.02)
    # Below the axes: inside, "best" ignores the twin axis and can cover the accuracy line.
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=len(handles),
              fontsize=9, frameon=False)
    ax.set_title("Loss curves")
    return _figure_png(fig)


def plot_confusion_matrix(cm: Sequence[Sequence[int]], label_names: Sequence[str], path: str | Path) -> Path:
    """Write the confusion-matrix plot to `path` (PNG, atomically) and return the path."""
    return _atomic_write_bytes(Path(path), confusion_matrix_png(cm, label_names))


def plot_loss_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write the loss-curve plot of metrics.jsonl records to `path` (PNG, atomically)."""
    return _atomic_write_bytes(Path(path), loss_curves_png(history))


def most_confidently_wrong(
    texts: Sequence[str], y_true: Sequence[int], probs: np.ndarray, label_names: Sequence[str], top: int = 20
) -> list[dict[str, Any]]:
    """Misclassified examples, highest predicted-class probability first (at most `top`)."""
    probs = np.asarray(probs, dtype=float)
    true = np.asarray(y_true, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[1] != len(label_names):
        raise ValueError(f"probs has shape {probs.shape}, expected (n, {len(label_names)})")
    if not (len(texts) == len(true) == probs.shape[0]):
        raise ValueError(f"got {len(texts)} texts, {len(true)} labels and {probs.shape[0]} rows of probabilities")
    if true.size and (true.min() < 0 or true.max() >= len(label_names)):
        raise ValueError(f"y_true holds label ids outside 0..{len(label_names) - 1}")
    if top <= 0 or true.size == 0:
        return []
    pred = probs.argmax(axis=1)
    confidence = probs[np.arange(len(pred)), pred]
    wrong = np.flatnonzero(pred != true)
    # Stable sort on -confidence: ties keep input order, so the list is reproducible.
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:top]
    return [
        {
            "text": str(texts[i]),
            "true": str(label_names[true[i]]),
            "predicted": str(label_names[pred[i]]),
            "confidence": float(confidence[i]),
        }
        for i in order
    ]


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.diag{background:#dbeafe;font-weight:bold}td.text{max-width:640px;white-space:pre-wrap;word-break:break-word}
img{max-width:100%;height:auto;border:1px solid #eee}.note{color:#666;font-size:.88em}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: Any) -> str:
    return f"{100.0 * float(value):.2f}%" if isinstance(value, (int, float)) else _esc(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], raw_cells: bool = False) -> str:
    """An HTML table; cells are escaped unless `raw_cells` (then they are pre-built <td> elements)."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(row) if raw_cells else "".join(f"<td>{_esc(c)}</td>" for c in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _render_html(
    report: Mapping[str, Any], label_names: Sequence[str], wrong: list[dict[str, Any]],
    extra: Mapping[str, Any], title: str, cm_png: bytes, loss_png: bytes,
) -> str:
    """The report page as one string with everything inline."""
    labels = [str(name) for name in label_names]
    average = average_mode(len(labels))
    avg_note = (f"precision/recall/f1: binary, positive class = {labels[1]!s}" if average == "binary"
                else "precision/recall/f1: macro average over classes")

    headline = [f'<td>{_esc(k)}</td><td class="num">{_pct(report[k])}</td>' for k in HEADLINE_KEYS if k in report]
    if isinstance(report.get("loss"), (int, float)):  # the trainer may add it; it is not a fraction
        headline.append(f'<td>loss</td><td class="num">{float(report["loss"]):.4f}</td>')
    if "num_examples" in report:
        headline.append(f'<td>examples</td><td class="num">{int(report["num_examples"])}</td>')

    per_class = [
        f"<td>{_esc(name)}</td>" + "".join(f'<td class="num">{_pct(stats.get(k, 0.0))}</td>'
                                           for k in ("precision", "recall", "f1"))
        + f'<td class="num">{int(stats.get("support", 0))}</td>'
        for name, stats in report.get("per_class", {}).items()
    ]

    cm_rows = []
    for i, row in enumerate(report.get("confusion_matrix", [])):
        cells = "".join(f'<td class="num{" diag" if i == j else ""}">{int(v)}</td>' for j, v in enumerate(row))
        cm_rows.append(f"<th>{_esc(labels[i] if i < len(labels) else i)}</th>{cells}")

    wrong_rows = []
    for rank, item in enumerate(wrong, start=1):
        text = item["text"]
        if len(text) > _MAX_HTML_TEXT:
            text = text[:_MAX_HTML_TEXT] + "\u2026"
        wrong_rows.append(
            f'<td class="num">{rank}</td><td class="text">{_esc(text)}</td><td>{_esc(item["true"])}</td>'
            f'<td>{_esc(item["predicted"])}</td><td class="num">{_pct(item["confidence"])}</td>'
        )

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    if extra:
        parts += ["<h2>Run</h2>", _table(["field", "value"], [[k, v] for k, v in extra.items()])]
    parts += [
        "<h2>Metrics</h2>", _table(["metric", "value"], headline, raw_cells=True),
        f'<p class="note">{_esc(avg_note)}</p>',
        "<h2>Per class</h2>", _table(["label", "precision", "recall", "f1", "support"], per_class, raw_cells=True),
        "<h2>Confusion matrix</h2>",
        '<p class="note">rows: true label, columns: predicted label</p>',
        _table(["true \\ predicted", *labels], cm_rows, raw_cells=True),
        _img(cm_png, "confusion matrix"),
        "<h2>Loss curves</h2>", _img(loss_png, "loss curves"),
        "<h2>Most confidently wrong</h2>",
    ]
    if wrong_rows:
        parts.append(_table(["#", "text", "true", "predicted", "confidence"], wrong_rows, raw_cells=True))
    else:
        parts.append('<p class="note">No misclassified examples.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    out_dir: str | Path,
    *,
    report: dict[str, Any],
    texts: list[str],
    y_true: list[int],
    probs: np.ndarray,
    label_names: list[str],
    history: list[dict[str, Any]],
    title: str,
    extra: dict[str, Any] | None = None,
    top_wrong: int = 20,
) -> dict[str, Path]:
    """Write evaluation.json, confusion_matrix.png, loss_curves.png and report.html into `out_dir`.

    Returns the written paths under the keys `json`, `confusion_matrix`, `loss_curves` and `html`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wrong = most_confidently_wrong(texts, y_true, probs, label_names, top=top_wrong)

    evaluation = dict(report)
    evaluation["most_confidently_wrong"] = wrong
    cm_png = confusion_matrix_png(report["confusion_matrix"], label_names)
    loss_png = loss_curves_png(history)
    page = _render_html(report, label_names, wrong, extra or {}, title, cm_png, loss_png)

    # All content is built before the first write, so a rendering error leaves no partial set.
    json_text = json.dumps(_jsonable(evaluation), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return {
        "json": _atomic_write_bytes(out / EVALUATION_JSON, json_text.encode("utf-8")),
        "confusion_matrix": _atomic_write_bytes(out / CONFUSION_PNG, cm_png),
        "loss_curves": _atomic_write_bytes(out / LOSS_PNG, loss_png),
        "html": _atomic_write_bytes(out / REPORT_HTML, page.encode("utf-8")),
    }
