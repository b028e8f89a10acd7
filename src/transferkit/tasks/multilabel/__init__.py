"""Multi-label classification (`--task multilabel`): zero or more labels per text (tags, topics).

    task.py     the Task: one sigmoid per label, BCE (per-label positive weights with
                train.class_weights=balanced), decision thresholds tuned per label on the validation split
    read.py     a text and its labels: a list (JSONL, Parquet, datasets) or a separated string (CSV/TSV)
    metrics.py  micro / macro / samples F1, subset accuracy, per-label precision / recall / F1
    report.py   evaluation.json and report.html with the per-label table

Rows are split by classify's machinery (`classify/splits.py` with this folder's `LabelSetRule`: stratified by
each row's rarest label).
"""
from ...core.registry import TASKS
from . import dataset  # noqa: F401 - registers the bundled dataset
from .task import MultiLabel

if MultiLabel.name not in TASKS:  # a module reload must not register twice
    TASKS.register(MultiLabel.name, MultiLabel)
