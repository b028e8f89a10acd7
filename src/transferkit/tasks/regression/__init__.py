"""Regression (`--task regression`): one or more numbers per text (ratings, similarity, scores).

    task.py     the Task: a linear head over the pooled text, MSE (or Huber) on standardised targets, answers
                in the targets' own units; decoding, routes' items, prediction files
    read.py     a text column and float target columns (`--label-column score` or `a,b`)
    metrics.py  MSE, MAE, Pearson and Spearman per target
    report.py   evaluation.json, a scatter plot of predicted against true per target, report.html

Rows are split by classify's machinery (`classify/splits.py` with this folder's `TargetRule`: stratified by
the first target's decile, so every split spans the range).
"""
from ...core.registry import TASKS
from . import dataset  # noqa: F401 - registers the bundled dataset
from .task import Regression

if Regression.name not in TASKS:  # a module reload must not register twice
    TASKS.register(Regression.name, Regression)
