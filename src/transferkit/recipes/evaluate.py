"""Scoring a finished run: its own test split (rebuilt from the files it trained on, after checking their
content hashes) or a labelled file, with the run's task's metrics and report. `api.evaluate` and `tune`
(which scores its best trial once) both call `run_evaluation`."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..core import fs, runtime
from ..core.runs import RunInfo, read_history
from ..inference.loading import labelled_split, load_run_model, run_task
from ..inference.predictor import quantize_int8
from ..modeling.resolve import load_tokenizer

logger = logging.getLogger(__name__)


def run_evaluation(run_dir: str | Path, data: str | None = None, *, text_column: str | None = None,
                   label_column: str | None = None, output_dir: str | Path | None = None, quantize: bool = False,
                   base_model: str | None = None) -> dict[str, Any]:
    """The run's metrics on `data` (default: its own test split), with the report written to `output_dir`
    (default RUN_DIR/report)."""
    runtime.setup()
    info = RunInfo.read(run_dir)
    task = run_task(info)
    out = Path(output_dir) if output_dir else Path(run_dir) / "report"
    fs.check_writable_dir(out, "report folder")
    split, source = labelled_split(run_dir, info, task, data, text_column, label_column)
    model = load_run_model(info, merge=True, base_model=base_model)
    if quantize:
        model = quantize_int8(model)
    tokenizer = load_tokenizer(str(info.artifact_dir))
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # The report is written whole into a folder of its own inside `out`, then its files are renamed into `out`
    # (renames need no space): a disk that fills halfway leaves no evaluation.json without its report.html.
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".report-"))
    try:
        report, written = task.score(model, tokenizer, info, split, tmp, history=read_history(Path(run_dir)),
                                     title=f"transferkit: {info.method} on {source}",
                                     extra={"run directory": str(run_dir), "model": info.model_name,
                                            "method": info.method, "data": source, "rows": len(split)})
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            (out / f.relative_to(tmp)).parent.mkdir(parents=True, exist_ok=True)
            fs.replace(f, out / f.relative_to(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    paths = {k: out / Path(v).relative_to(tmp) for k, v in written.items()}
    logger.info(f"{source}: " + " ".join(f"{k}={report[k]:.4f}" for k in task.headline_metrics if k in report))
    logger.info(f"report: {paths.get('html', out)}")
    return report
