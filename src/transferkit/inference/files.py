"""Prediction files, `predict_run` (the API/CLI entry for one run or export) and `predict_runs` (several runs on one
base: texts routed by list, `NAME:text` tag or file column)."""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core import fs
from .. import tasks
from ..core.errors import UserError
from ..core.registry import TASKS
from ..core.runs import RunInfo
from ..data.tables import read_texts
from ..tasks.base import SHARED_RUNS_CSV_COLUMNS, Task
from .adapters import AdapterPredictor
from .loading import run_task
from .onnx_backend import check_backend, read_manifest
from .predictor import Predictor, check_batch_size

logger = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".jsonl", ".json", ".csv")  # prediction files


def split_tags(texts: Sequence[str], names: Sequence[str], default: str | None = None) -> tuple[list[str], list[str]]:
    """`NAME:text` -> (text, NAME) for a loaded adapter NAME; untagged texts go to `default`."""
    out_texts, out_names = [], []
    for i, t in enumerate(texts, start=1):
        head, sep, rest = t.partition(":") if isinstance(t, str) else ("", "", "")  # a pair has no tag
        if sep and head.strip() in names:
            out_texts.append(rest.strip())
            out_names.append(head.strip())
        elif default is not None:
            out_texts.append(t)
            out_names.append(default)
        else:
            raise UserError(f"text {i} has no adapter tag: write NAME:text with NAME one of {', '.join(names)} "
                            f"(or pass --use NAME for untagged texts; adapters=[...] in Python, for pairs too)")
    return out_texts, out_names


def write_predictions(path: Path, rows: list[dict[str, Any]], tasks: Task | Sequence[Task],
                      label_names: Sequence[str] = ()) -> None:
    """The one prediction writer: JSONL (one object per text) or, for a .csv path, one row per text. `tasks`
    is one run's task (the columns are text and the task's `csv_header`, e.g. label, confidence and a
    p_<label> column each) or, for rows of several runs (each with its "adapter"), one task per row (the
    columns are text, adapter, `SHARED_RUNS_CSV_COLUMNS`, then what the rows' tasks add: see `Task`)."""

    buf = io.StringIO(newline="")
    if path.suffix.lower() != ".csv":
        for r in rows:
            buf.write(fs.dumps(r, ensure_ascii=False) + "\n")
    elif isinstance(tasks, Task):
        w = csv.writer(buf)
        w.writerow(["text", *tasks.csv_header(label_names)])
        for r in rows:
            w.writerow([r["text"], *tasks.csv_cells(r, label_names)])
    else:
        _write_runs_csv(csv.writer(buf), rows, list(tasks))
    fs.write_text(path, buf.getvalue())


def _write_runs_csv(writer: Any, rows: list[dict[str, Any]], row_tasks: list[Task]) -> None:
    """Rows of several runs: the shared columns always, each present task's own columns after them in the
    registry's order (a file's layout depends on which tasks it holds, not on the order of its rows)."""
    if len(row_tasks) != len(rows):
        raise ValueError(f"{len(row_tasks)} tasks for {len(rows)} prediction rows")
    present = {t.name: t for t in row_tasks}
    own = [c for name in TASKS if name in present for c in present[name].runs_csv_columns]
    columns = list(dict.fromkeys([*SHARED_RUNS_CSV_COLUMNS, *own]))
    writer.writerow(["text", "adapter", *columns])
    for r, task in zip(rows, row_tasks):
        cells = task.runs_csv_cells(r)
        writer.writerow([r["text"], r["adapter"], *(cells.get(c, "") for c in columns)])


def predict_runs(runs: Mapping[str, str | Path], texts: Sequence[str] | None = None, *,
                 adapter: str | None = None, adapters: Sequence[str] | None = None, input: str | None = None,
                 text_column: str | None = None, adapter_column: str | None = None, output: str | None = None,
                 batch_size: int = 64, base_model: str | None = None) -> list[dict[str, Any]]:
    """`transferkit.predict({name: run_dir, ...}, ...)`: each text goes to one adapter, chosen by
    `adapters` (one name per text), an input file's `adapter_column`, a `NAME:text` tag, or else `adapter`."""
    if texts is None and input is None:
        raise UserError("give texts to predict or --input FILE")
    check_batch_size(batch_size)
    if output is not None:
        fs.check_output_file(output, OUTPUT_SUFFIXES)
    names = [str(n) for n in runs]
    if adapter is not None and adapter not in names:
        raise UserError(f"unknown adapter {adapter!r}; loaded adapters: {', '.join(names)}")
    all_texts = list(texts or [])
    if adapters is not None:
        if len(list(adapters)) != len(all_texts):
            raise UserError(f"adapters: got {len(list(adapters))} names for {len(all_texts)} texts")
        routed = list(adapters)
    else:
        all_texts, routed = split_tags(all_texts, names, adapter)
    if input is not None:
        file_texts = read_texts(input, text_column)
        if adapter_column is not None:
            file_names = read_texts(input, adapter_column)
            unknown = sorted(set(file_names) - set(names))
            if unknown:
                raise UserError(f"{input}: adapter column {adapter_column!r} names {', '.join(unknown[:3])}, "
                                f"which are not loaded (loaded: {', '.join(names)})")
        else:
            file_texts, file_names = split_tags(file_texts, names, adapter)
        all_texts += file_texts
        routed += file_names
    if not all_texts:
        raise UserError("no texts to predict")
    predictor = AdapterPredictor.from_runs(runs, batch_size=batch_size, base_model=base_model)
    results = predictor.predict(all_texts, adapters=routed)  # each input checked by its adapter's task
    logger.info(f"predicted {len(all_texts)} texts with {len(set(routed))} adapter(s) on one base model "
                f"at {predictor.last_throughput:.1f} texts/s")
    rows = [{**predictor.task_of(r["adapter"]).input_fields(t), **r} for t, r in zip(all_texts, results)]
    if output is not None:
        write_predictions(Path(output), rows, [predictor.task_of(r["adapter"]) for r in rows])
        logger.info(f"wrote {output}")
    return rows


def predict_run(run_dir: str | Path, texts: Sequence[str] | None = None, *, input: str | None = None,
                output: str | None = None, text_column: str | None = None, batch_size: int = 64,
                quantize: bool = False, base_model: str | None = None, backend: str = "auto") -> list[dict[str, Any]]:
    """`transferkit.predict(run_dir, ...)` for one run or ONNX export: the texts given and those of `input`,
    every one checked before the model loads, predicted in one call, written to `output` if given."""
    onnx = check_backend(backend, run_dir, quantize)  # a wrong backend is said before any text is read
    if texts is None and input is None:
        raise UserError("give texts to predict or --input FILE")
    if output is not None:
        fs.check_output_file(output, OUTPUT_SUFFIXES)
    task = tasks.get(read_manifest(run_dir)["task"]) if onnx else run_task(RunInfo.read(run_dir))
    all_texts = task.cli_inputs(texts or [])  # what an input is, the run's task says (a text, a pair)
    if input is not None:
        all_texts += task.read_inputs(input, text_column)
    if not all_texts:
        raise UserError("no texts to predict")
    predictor = Predictor.from_run(run_dir, quantize=quantize, batch_size=batch_size, base_model=base_model,
                                   backend=backend)
    results = predictor.predict(all_texts)
    logger.info(f"predicted {len(all_texts)} texts at {predictor.last_throughput:.1f} texts/s")
    rows = [{**task.input_fields(t), **r} for t, r in zip(all_texts, results)]
    if output is not None:
        write_predictions(Path(output), rows, predictor.task, predictor.label_names)
        logger.info(f"wrote {output}")
    return rows
