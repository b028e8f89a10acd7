"""`wiki-ner-types`, the bundled multi-label dataset: each sentence of the shipped `wiki-ner-silver` corpus
with the set of entity types its silver tags contain (PERSON, GPE, DATE, ...; none for a sentence without
entities). Derived and silver: the labels are spaCy en_core_web_sm's, so scores on it are agreement with that
teacher, not gold accuracy. The words are joined by spaces as the corpus splits them."""
from __future__ import annotations

import gzip
import json
from typing import Any

from ...core.registry import DATASETS
from ...data.bundled import DerivedDataset, register_dataset


def entity_type_sets(lines: Any) -> Any:
    """(text, labels) rows from tagged JSON lines ({"tokens", "tags"} in IOB2)."""
    import pandas as pd
    texts, labels = [], []
    for line in lines:
        if not line.strip():
            continue
        row = json.loads(line)
        texts.append(" ".join(row["tokens"]))
        labels.append(sorted({t[2:] for t in row["tags"] if t.startswith(("B-", "I-"))}))
    return pd.DataFrame({"text": pd.Series(texts, dtype=object), "labels": pd.Series(labels, dtype=object)})


def _derive() -> Any:
    with gzip.open(DATASETS.get("wiki-ner-silver").path, "rt", encoding="utf-8") as f:
        return entity_type_sets(f)


register_dataset(DerivedDataset(
    "wiki-ner-types",
    "Wikipedia summary sentences with the entity types they mention (silver, derived from wiki-ner-silver)",
    _derive, ("CARDINAL", "DATE", "GPE", "LOC", "NORP", "ORDINAL", "ORG", "PERSON", "QUANTITY"), 12000,
    "wiki-ner-silver (spaCy en_core_web_sm labels; silver)", ("text", "labels"), "multilabel"))
