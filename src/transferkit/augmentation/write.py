"""`transferkit augment`: a file's rows plus their augmented copies, written without training, so the
new rows can be read before a run trains on them.

The task reads the file and writes the rows (`Task.augment_file`), in the output formats it allows
(`Task.augment_formats`): sentence data as CSV, TSV or JSONL (by the output's extension) with the
columns text, label, origin (`original`, or e.g. `eda of row 12`); tagged data (task ner) as JSONL
with tokens, tags, origin. Every row of the input counts as training data here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .. import tasks
from ..core import fs
from ..core.errors import UserError
from .spec import parse_spec, text_steps

logger = logging.getLogger(__name__)


def write_augmented(data: str, spec: str, output: str | Path, *, task: str = "classify",
                    text_column: str | None = None, label_column: str | None = None, seed: int = 42) -> dict[str, Any]:
    """Augment every row of `data` by `spec` and write originals + new rows to `output`; returns the record."""
    steps = parse_spec(spec)
    if not text_steps(steps):
        raise UserError(f"augment: {spec!r} adds no texts (mixup happens inside training: give it to finetune)")
    try:
        found = tasks.get(task)
    except UserError as e:
        raise UserError(f"augment: {e}") from None
    out = Path(output).expanduser()
    ext = out.suffix.lower()
    if not found.augment_formats:
        raise UserError(f"augment: {found.name} data cannot be augmented into a file")
    if ext not in found.augment_formats:
        raise UserError(f"augment: output {out} must end in {', '.join(found.augment_formats)}")
    if not out.parent.is_dir():
        raise UserError(f"augment: output folder {out.parent} does not exist")
    if seed < 0 or seed >= 2**32:
        raise UserError(f"augment: seed must be in [0, 2**32), got {seed}")
    body, report = found.augment_file(data, steps, seed, spec, ext, text_column, label_column)
    fs.write_text(out, body)  # atomic: a failure leaves no half-written file
    logger.info(report.describe().replace("; validation and test unchanged", "") + f" -> {out}")
    return {**report.as_dict(), "output": str(out)}
