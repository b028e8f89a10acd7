"""The report of a token-classification run: entity metrics per type (JSON), and an HTML page that
shows, for the sentences with the most wrong tags, the gold and the predicted entities side by side."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ...core import fs
from .metrics import entity_metrics

WORST = 25  # sentences shown in the HTML page


def spans(words: list[str], tags: list[str]) -> list[tuple[int, int, str]]:
    """(first word, end word, type) of each IOB2 entity; an I- that starts an entity counts as B-."""
    out: list[tuple[int, int, str]] = []
    start, kind = None, None
    for i, t in enumerate(tags + ["O"]):
        cont = t.startswith("I-") and kind == t[2:]
        if start is not None and not cont:
            out.append((start, i, kind))
            start, kind = None, None
        if t != "O" and not cont:
            start, kind = i, t[2:]
    return out


def _marked(words: list[str], tags: list[str]) -> str:
    """The sentence as HTML with each entity highlighted and labelled."""
    parts, i = [], 0
    for a, b, kind in spans(words, tags):
        parts += [html.escape(w) for w in words[i:a]]
        parts.append(f'<mark title="{html.escape(kind)}">{html.escape(" ".join(words[a:b]))} '
                     f'<small>{html.escape(kind)}</small></mark>')
        i = b
    parts += [html.escape(w) for w in words[i:]]
    return " ".join(parts)


def write_token_report(out: Path, splits: Any, predictions: list[list[int]], history: list[dict], title: str,
                       extra: dict[str, Any]) -> dict[str, Path]:
    names = splits.label_names
    words = splits.test.tokens
    gold = [[names[t] for t in s] for s in splits.test.tags]
    pred = [[names[t] for t in s] for s in predictions]
    metrics = entity_metrics(gold, pred) if gold else {}
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "evaluation.json", "html": out / "report.html"}
    fs.write_json(paths["json"], {**metrics, "sentences": len(gold), "extra": extra})
    wrong = sorted(range(len(gold)), key=lambda i: -sum(g != p for g, p in zip(gold[i], pred[i])))[:WORST]
    rows = "".join(f"<tr><td>{_marked(words[i], gold[i])}</td><td>{_marked(words[i], pred[i])}</td></tr>"
                   for i in wrong if gold[i] != pred[i])
    per_type = "".join(f"<tr><td>{html.escape(t)}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td>"
                       f"<td>{v['f1']:.3f}</td><td>{v['support']}</td></tr>"
                       for t, v in metrics.get("per_type", {}).items())
    head = " ".join(f"{k} {metrics[k]:.4f}" for k in ("precision", "recall", "f1", "token_accuracy") if k in metrics)
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
            "mark{background:#ffe9a8}</style>"
            f"<h1>{html.escape(title)}</h1><p>entity-level (strict IOB2): {head}</p>"
            "<h2>Per entity type</h2><table><tr><th>type</th><th>precision</th><th>recall</th><th>f1</th>"
            f"<th>support</th></tr>{per_type}</table>"
            "<h2>Sentences with the most wrong tags</h2><table><tr><th>gold</th><th>predicted</th></tr>"
            f"{rows or '<tr><td colspan=2>none</td></tr>'}</table>")
    fs.write_text(paths["html"], page)
    return paths
