"""What is predicted and scored: a `Task` owns the label space, the head, how examples become
tensors, the loss, the metrics and the report. The run, the loop and the predictor ask the task;
none of them branches on a task's name. `tasks.get(name)` finds one (`classify` today;
token classification is the next)."""
from __future__ import annotations

from .base import Task
from .classification import SequenceClassification

TASKS: dict[str, type[Task]] = {SequenceClassification.name: SequenceClassification}


def get(name: str) -> Task:
    from ..errors import UserError
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]()


__all__ = ["Task", "SequenceClassification", "TASKS", "get"]
