"""What is predicted and scored. A task is one folder here (`classify/`: one label per text; `ner/`: one IOB2
tag per word) owning everything about it: its rows and how a file of them is read, encoding, head kind, loss,
metrics, decoding model outputs into output rows, its report, defaults, pipeline names and HTTP routes. The
run, the loop, the predictor, the server and the CLI ask the task object; none of them names a task.

Each folder's `__init__` registers its task in `core.registry.TASKS`; this package imports every folder, so a
new task is a new folder (plus its row in tests/contract). `tasks.get(name)` gives a fresh instance.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..core.registry import TASKS
from .base import Task

for _folder in pkgutil.iter_modules(__path__):
    if _folder.ispkg:  # a task folder registers itself on import
        importlib.import_module(f"{__name__}.{_folder.name}")


def get(name: str) -> Task:
    """A fresh instance of the task registered as `name` (a one-line UserError for an unknown one)."""
    return TASKS.get(name)()


__all__ = ["Task", "TASKS", "get"]
