"""Sentence classification (`--task classify`, the default): one label per text.

    task.py     the Task: pooled-encoder head, cross-entropy, accuracy / precision / recall / F1, decoding
    read.py     text + label rows from any source `data.tables` reads (`LabelledData`)
    mapped.py   the same rows from a file larger than memory, through the one mapped cache (`data.mapped`)
    splits.py   a labelled file or dataset as deduplicated, stratified train/validation/test splits
    serving.py  its HTTP routes: /v1/classify (vLLM's shape) and /predict (text-embeddings-inference's)
"""
from ...core.registry import TASKS
from .task import SequenceClassification

if SequenceClassification.name not in TASKS:  # a module reload must not register twice
    TASKS.register(SequenceClassification.name, SequenceClassification)
