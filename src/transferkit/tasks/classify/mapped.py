"""Sentence-classification data larger than memory: a file streamed through the one mapped cache
(`data.mapped`) as (text, label code) rows, each chunk through `read.py`'s own cleaners, so the rules of
the in-memory path hold row for row. The run then holds per row an 8-byte text hash, a label and a row
index; the texts stay in the mapped file (`MappedTexts`)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...core.errors import UserError
from ...data import bundled
from ...data.fingerprint import file_sha256
from ...data.mapped import FORMAT, MappedTexts, chunk_reader, build_folder, open_or_build
from ...data.split import text_hashes
from ...data.tables import TEXT_CANDIDATES, ColumnTable, clean_texts, pick_column
from .read import LABEL_CANDIDATES, LabelledData, clean_labels, normalise_labels


def load_mapped(source: str, text_column: str | None, label_column: str | None) -> LabelledData | None:
    """`source` as LabelledData over the mapped cache (built on first use); None when the file is not
    one this path streams (a `.json` array: the caller reads it in memory)."""
    path = Path(source).expanduser()
    chunks = chunk_reader(path, source)
    if chunks is None:
        return None
    key = hashlib.sha256(json.dumps([FORMAT, file_sha256(path), text_column, label_column]).encode()).hexdigest()[:20]
    cached = open_or_build(bundled.cache_dir() / "tables" / key, lambda folder: _build(folder, chunks, source,
                           text_column, label_column), source, "rows")
    meta, table = cached.meta, cached.table
    # The column choice (and its note) is made again under the name the user gave this time.
    probe = ColumnTable(meta["columns"], lambda c: [], lambda i: "")
    tcol, tnote = pick_column(probe, text_column, TEXT_CANDIDATES, "text", source)
    lcol, lnote = pick_column(probe, label_column, LABEL_CANDIDATES, "label", source)
    values = meta["labels"]
    codes = table.column("label").to_numpy()
    labels = [values[c] for c in codes.tolist()]
    texts = MappedTexts(table.column("text"), np.arange(len(labels)), cached.arrays["keys"], key, cached.mapping)
    return LabelledData(texts, labels, source, [n for n in (tnote, lnote) if n])


def _build(folder: Path, chunks: Iterator[ColumnTable], source: str, text_column: str | None,
           label_column: str | None) -> None:
    """Stream every chunk through the cleaners into a new cache folder, swapped in when complete."""
    import pyarrow as pa
    schema = pa.schema([("text", pa.string()), ("label", pa.int32())])

    def write(tmp: Path) -> None:
        codes: dict[tuple[str, Any], int] = {}  # (type, raw label) -> code, in first-seen order
        keys: list[np.ndarray] = []
        rows = 0
        with pa.OSFile(str(tmp / "rows.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for table in chunks:
                if rows == 0:
                    tcol, _ = pick_column(table, text_column, TEXT_CANDIDATES, "text", source)
                    lcol, _ = pick_column(table, label_column, LABEL_CANDIDATES, "label", source)
                    if tcol == lcol:
                        raise UserError(f"{source}: text and label columns are both {tcol!r}")
                    columns = list(table.columns)
                texts = clean_texts(table, tcol, source)
                raw = clean_labels(table, lcol, source, normalise=False)
                ids = np.fromiter((codes.setdefault((type(v).__name__, v), len(codes)) for v in raw),
                                  dtype=np.int32, count=len(raw))
                keys.append(text_hashes(texts))
                writer.write_batch(pa.record_batch([pa.array(texts, pa.string()), pa.array(ids)], schema=schema))
                rows += len(texts)
        np.save(tmp / "keys.npy", np.concatenate(keys) if keys else np.zeros(0, np.uint64), allow_pickle=False)
        # The in-memory reader decides once over all labels whether they are numbers; the same decision
        # over the distinct raw labels gives the same values.
        labels = normalise_labels([v for _, v in codes])
        meta = {"format": FORMAT, "source": Path(source).name, "rows": rows, "columns": columns, "labels": labels}
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    build_folder(folder, write)
