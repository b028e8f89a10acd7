"""The report of a generation run: evaluation.json (ROUGE, exact match, held-out loss and perplexity, and
every example's prompt, reference and output with its scores), loss_curves.png and report.html (the metrics
and the best and worst examples by ROUGE-L)."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

from ...core import fs
from ...reporting.run_report import loss_curves_png

SHOWN = 10  # best and worst examples on the page
PROMPT_CHARS = 600  # a long prompt is shortened on the page (evaluation.json keeps it whole)


def _cut(text: str, n: int = PROMPT_CHARS) -> str:
    return text if len(text) <= n else text[:n] + " ..."


def write_generation_report(out: Path, prompts: Sequence[str], references: Sequence[str], outputs: Sequence[str],
                            metrics: dict[str, Any], scores: Sequence[dict], history: Sequence[dict], title: str,
                            extra: dict[str, Any]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "evaluation.json", "html": out / "report.html"}
    examples = [{"prompt": p, "reference": r, "output": o, **s}
                for p, r, o, s in zip(prompts, references, outputs, scores)]
    fs.write_json(paths["json"], {**metrics, "examples": len(examples), "extra": extra, "rows": examples})
    curves = ""
    if history:
        paths["curves"] = out / "loss_curves.png"
        fs.write_bytes(paths["curves"], loss_curves_png(history))
        curves = "<h2>Training</h2><img src='loss_curves.png' alt='loss curves'>"
    ranked = sorted(range(len(examples)), key=lambda i: (-examples[i]["rougeL"], i))

    def table(idx: Sequence[int]) -> str:
        rows = "".join(f"<tr><td>{html.escape(_cut(examples[i]['prompt']))}</td>"
                       f"<td>{html.escape(examples[i]['reference'])}</td><td>{html.escape(examples[i]['output'])}</td>"
                       f"<td>{examples[i]['rougeL']:.3f}</td></tr>" for i in idx)
        return f"<table><tr><th>prompt</th><th>reference</th><th>output</th><th>ROUGE-L</th></tr>{rows}</table>"
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    summary = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in shown.items())
    about = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in extra.items())
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;"
            "padding:4px;vertical-align:top}table{border-collapse:collapse;margin:1em 0}</style>"
            f"<h1>{html.escape(title)}</h1><table>{about}</table><h2>Test metrics ({len(examples)} examples)</h2>"
            f"<table>{summary}</table>{curves}<h2>Best examples</h2>{table(ranked[:SHOWN])}"
            f"<h2>Worst examples</h2>{table(ranked[::-1][:SHOWN])}")
    fs.write_text(paths["html"], page)
    return paths
