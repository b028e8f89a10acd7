"""`transferkit augment`: a file's rows plus their augmented copies, written without training, so the
new rows can be read before a run trains on them.

Sentence data is written as CSV, TSV or JSONL (by the output's extension) with the columns
text, label, origin (`original`, or e.g. `eda of row 12`); tagged data (task ner) as JSONL
with tokens, tags, origin. Every row of the input counts as training data here.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable

from ..core import fs
from ..core.errors import UserError
from .apply import augment_tagged, augment_texts
from .spec import parse_spec, text_steps

FORMATS = (".csv", ".tsv", ".jsonl")


def write_augmented(data: str, spec: str, output: str | Path, *, task: str = "classify",
                    text_column: str | None = None, label_column: str | None = None, seed: int = 42,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Augment every row of `data` by `spec` and write originals + new rows to `output`; returns the record."""
    steps = parse_spec(spec)
    if not text_steps(steps):
        raise UserError(f"augment: {spec!r} adds no texts (mixup happens inside training: give it to finetune)")
    out = Path(output).expanduser()
    ext = out.suffix.lower()
    if ext not in FORMATS or (task == "ner" and ext != ".jsonl"):
        allowed = ".jsonl" if task == "ner" else ", ".join(FORMATS)
        raise UserError(f"augment: output {out} must end in {allowed}")
    if not out.parent.is_dir():
        raise UserError(f"augment: output folder {out.parent} does not exist")
    if seed < 0 or seed >= 2**32:
        raise UserError(f"augment: seed must be in [0, 2**32), got {seed}")
    if task == "ner":
        from ..tasks.ner.read import load_tagged
        table = load_tagged(data, text_column, label_column, role="data")
        names = sorted({t for tags in table.tags for t in tags})
        ids = [[names.index(t) for t in tags] for tags in table.tags]
        tokens, tag_ids, _, report = augment_tagged(table.tokens, ids, table.where, names, steps, seed, spec)
        rows = [{"tokens": tok, "tags": [names[j] for j in tg], "origin": _origin(report, k, len(table))}
                for k, (tok, tg) in enumerate(zip(tokens, tag_ids))]
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif task == "classify":
        from ..data.load import load_table
        table = load_table(data, text_column, label_column, role="data")
        texts, labels, report = augment_texts(list(table.texts), list(table.labels), steps, seed, spec, log)
        rows = [{"text": t, "label": y, "origin": _origin(report, k, len(table))}
                for k, (t, y) in enumerate(zip(texts, labels))]
        if ext == ".jsonl":
            body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        else:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=["text", "label", "origin"], delimiter="\t" if ext == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
            body = buf.getvalue()
    else:
        raise UserError(f"augment: unknown task {task!r} (classify or ner)")
    fs.write_text(out, body)  # atomic: a failure leaves no half-written file
    log(report.describe().replace("; validation and test unchanged", "") + f" -> {out}")
    return {**report.as_dict(), "output": str(out)}


def _origin(report: Any, k: int, n_original: int) -> str:
    if k < n_original:
        return "original"
    kind, source = report.origins[k - n_original]
    return f"{kind} of row {source + 1}"
