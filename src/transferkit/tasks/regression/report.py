"""The report of a regression run: evaluation.json (metrics per target), scatter.png (predicted against
true, one panel per target, with the identity line) and report.html (the metrics, the plot, the texts with
the largest errors)."""
from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...core import fs
from .metrics import regression_metrics

WORST = 20  # texts with the largest errors shown in the HTML page


def scatter_png(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False)
    try:
        for k, (ax, name) in enumerate(zip(axes[0], names)):
            t, p = y_true[:, k], y_pred[:, k]
            ax.scatter(t, p, s=6, alpha=0.4)
            lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
            ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
            ax.set_xlabel(f"true {name}".replace("$", r"\$"))
            ax.set_ylabel(f"predicted {name}".replace("$", r"\$"))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


def write_regression_report(out: Path, texts: Sequence[str], y_true: Any, y_pred: Any, names: Sequence[str],
                            title: str, extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """(metrics, paths written) for predictions `y_pred` of targets `y_true` ([n, targets] each)."""
    t = np.asarray(y_true, dtype=np.float64).reshape(len(texts), -1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(len(texts), -1)
    metrics = regression_metrics(t, p, names)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "evaluation.json", "html": out / "report.html"}
    fs.write_json(paths["json"], {**metrics, "examples": len(texts), "extra": extra})
    img = ""
    if len(texts):
        paths["scatter"] = out / "scatter.png"
        png = scatter_png(t, p, names)
        fs.write_bytes(paths["scatter"], png)
        img = "<img src='scatter.png' alt='predicted against true'>"
    per = "".join(f"<tr><td>{html.escape(n)}</td><td>{v['mse']:.4f}</td><td>{v['mae']:.4f}</td>"
                  f"<td>{v['pearson']:.4f}</td><td>{v['spearman']:.4f}</td><td>{v['support']}</td></tr>"
                  for n, v in metrics["per_target"].items())
    worst = np.argsort(-np.abs(p - t).sum(axis=1))[:WORST] if len(texts) else []
    rows = "".join(f"<tr><td>{html.escape(str(texts[i]))}</td><td>{', '.join(f'{x:.3g}' for x in t[i])}</td>"
                   f"<td>{', '.join(f'{x:.3g}' for x in p[i])}</td></tr>" for i in worst)
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;border-bottom:1px solid #ddd}</style>"
            f"<h1>{html.escape(title)}</h1><p>{len(texts):,} examples</p>"
            "<h2>Per target</h2><table><tr><th>target</th><th>MSE</th><th>MAE</th><th>Pearson</th><th>Spearman</th>"
            f"<th>n</th></tr>{per}</table>{img}"
            "<h2>Largest errors</h2><table><tr><th>text</th><th>true</th><th>predicted</th></tr>"
            f"{rows or '<tr><td colspan=3>none</td></tr>'}</table>")
    fs.write_text(paths["html"], page)
    return metrics, paths
