"""Named-entity recognition (`--task ner`): one IOB2 tag per word, entities with character offsets out.

    task.py      the Task: per-token head, loss on each word's first sub-token, decoding into entities
    read.py      tagged files (CoNLL through data.conll, JSONL, Parquet, HF folders; gzip) as sentences of words and tags
    schemes.py   IOB1 and IOBES read as IOB2
    splits.py    train/validation/test splits of sentences with tag ids
    mapped.py    a tagged file larger than memory, streamed into a memory-mapped cache
    spans.py     words to sub-tokens and overlapping windows, and back to entity spans
    windows.py   a mapped split's windows in a mapped file
    entities.py  texts to windows and window probabilities to entities (transformers' aggregation strategies)
    metrics.py   entity-level precision / recall / F1 (seqeval, strict IOB2) and token accuracy
    report.py    the run's report: per-type scores and the sentences with the most wrong tags
    serving.py   its HTTP route: /v1/ner
"""
from ...core.registry import TASKS
from .task import TokenClassification

if TokenClassification.name not in TASKS:  # a module reload must not register twice
    TASKS.register(TokenClassification.name, TokenClassification)
