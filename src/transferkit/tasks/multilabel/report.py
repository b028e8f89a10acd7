"""The report of a multi-label run: evaluation.json (the metrics, per-label table and thresholds) and
report.html (the averages, the per-label table, the texts with the most wrong label decisions)."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...core import fs
from .metrics import multilabel_metrics

WORST = 20


def write_multilabel_report(out: Path, texts: Sequence[str], y_true: Any, probs: np.ndarray, names: Sequence[str],
                            title: str, extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """(metrics, paths written); a label applies where its probability is >= 0.5 (the head's tuned thresholds
    are in its output shift)."""
    t = np.asarray(y_true, dtype=np.int64).reshape(len(texts), len(names))
    p = (probs >= 0.5).astype(np.int64)
    metrics = multilabel_metrics(t, p, names)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "evaluation.json", "html": out / "report.html"}
    fs.write_json(paths["json"], {**metrics, "examples": len(texts), "extra": extra})
    per = "".join(f"<tr><td>{html.escape(n)}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td>"
                  f"<td>{v['f1']:.3f}</td><td>{v['support']}</td></tr>" for n, v in metrics["per_label"].items())
    wrong = np.argsort(-(t != p).sum(axis=1), kind="stable")[:WORST] if len(texts) else []

    def labels(row: np.ndarray) -> str:
        return html.escape(", ".join(n for n, x in zip(names, row) if x) or "(none)")
    rows = "".join(f"<tr><td>{html.escape(str(texts[i]))}</td><td>{labels(t[i])}</td><td>{labels(p[i])}</td></tr>"
                   for i in wrong if (t[i] != p[i]).any())
    head = " ".join(f"{k} {metrics[k]:.4f}" for k in ("f1_micro", "f1_macro", "f1_samples", "subset_accuracy"))
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;border-bottom:1px solid #ddd}</style>"
            f"<h1>{html.escape(title)}</h1><p>{len(texts):,} examples: {head}</p>"
            "<h2>Per label</h2><table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
            f"{per}</table><h2>Texts with the most wrong labels</h2><table><tr><th>text</th><th>true</th>"
            f"<th>predicted</th></tr>{rows or '<tr><td colspan=3>none</td></tr>'}</table>")
    fs.write_text(paths["html"], page)
    return metrics, paths
