"""Sentence-pair classification (`--task pair`): one label per pair of texts (NLI, duplicate questions,
"does B answer A", next sentence).

    task.py     the Task: classify's head and metrics over the model's pair input ([CLS] A [SEP] B [SEP])
    read.py     two text columns and a label from any source `data.tables` reads

Pairs are split, deduplicated (a pair is one key) and scored by classify's machinery (`classify/splits.py`
with this folder's `PairRule`); they are served by classify's routes (TEI's pair form on /predict,
`[[a, b], ...]` on /v1/classify).
"""
from ...core.registry import TASKS
from . import dataset  # noqa: F401 - registers the bundled dataset
from .task import PairClassification

if PairClassification.name not in TASKS:  # a module reload must not register twice
    TASKS.register(PairClassification.name, PairClassification)
