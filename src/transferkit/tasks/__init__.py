"""What is predicted and scored: a `Task` owns the label space, the head, how examples become
tensors, the loss, the metrics and the report. The run, the loop and the predictor ask the task;
none of them branches on a task's name. `tasks.get(name)` finds one: `classify` (one label per
text) or `ner` (one IOB2 tag per word)."""
from __future__ import annotations

from .base import Task
from .classification import SequenceClassification
from .token_classification import TokenClassification

TASKS: dict[str, type[Task]] = {t.name: t for t in (SequenceClassification, TokenClassification)}


def get(name: str) -> Task:
    from ..errors import UserError
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]()


__all__ = ["Task", "SequenceClassification", "TokenClassification", "TASKS", "get"]
