"""What is predicted and scored: a `Task` owns the label space, the head, how examples become
tensors, the loss, the metrics and the report. The run, the loop and the predictor ask the task;
none of them branches on a task's name. `tasks.get(name)` finds one: `classify` (one label per
text) or `ner` (one IOB2 tag per word)."""
from __future__ import annotations

from ..core.registry import TASKS
from .base import Task
from .classify.task import SequenceClassification
from .ner.task import TokenClassification

for _task in (SequenceClassification, TokenClassification):
    if _task.name not in TASKS:  # a module reload must not register twice
        TASKS.register(_task.name, _task)


def get(name: str) -> Task:
    """A fresh instance of the task registered as `name` (a one-line UserError for an unknown one)."""
    return TASKS.get(name)()


__all__ = ["Task", "SequenceClassification", "TokenClassification", "TASKS", "get"]
