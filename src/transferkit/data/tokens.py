"""Tokenize once, measure lengths, and choose a max_length from the data.

Texts are tokenized in one call to the Rust tokenizer without padding (padding is per batch,
see `batches.py`), so the cost is paid once per run rather than once per epoch.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from typing import Any, Sequence

import numpy as np

from ..core import fs
from . import bundled
from .corpus import TokenCache, tokenizer_fingerprint
from .mapped import CHUNK_ROWS, MappedTexts

logger = logging.getLogger(__name__)

# With dynamic padding a long limit only costs time on the few long texts; 256 keeps one
# outlier from dominating a batch while truncating almost nothing in sentence-level data.
MAX_LENGTH_CAP = 256


# Texts per tokenizer call. One call over everything keeps every row's Rust `Encoding` (tokens,
# offsets, masks: kilobytes per row) alive until the call returns: a 1,000,000-row file peaked at
# 13.4 GB that way (benchmarks/data_memory.py). Chunks keep only the ids.
CHUNK = 10_000


def token_ids(tokenizer: Any, texts: Sequence[str], text_pairs: Sequence[str] | None = None, **kw: Any) -> Any:
    """Token id lists of `texts` (with `text_pairs`: of each pair, as the tokenizer encodes `text, text_pair`),
    special tokens added, one chunk of the tokenizer's output at a time."""
    for start in range(0, len(texts), CHUNK):
        pairs = [list(text_pairs[start:start + CHUNK])] if text_pairs is not None else []
        enc = tokenizer(list(texts[start:start + CHUNK]), *pairs, add_special_tokens=True, verbose=False,
                        return_attention_mask=False, return_token_type_ids=False, **kw)
        yield from enc["input_ids"]


def token_lengths(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """Untruncated token counts (special tokens included) of each text."""
    return np.fromiter((len(ids) for ids in token_ids(tokenizer, texts, truncation=False)), dtype=np.int64,
                       count=len(texts))


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    """Mean, max and 95th percentile of token counts."""
    if len(lengths) == 0:
        return {"mean": 0.0, "max": 0, "p95": 0.0}
    return {"mean": round(float(lengths.mean()), 1), "max": int(lengths.max()),
            "p95": round(float(np.percentile(lengths, 95)), 1)}


def choose_max_length(stats: dict[str, float], model_limit: int) -> int:
    """The longest training text rounded up to a multiple of 8, capped at 256 and the model limit."""
    longest = int(math.ceil(max(stats["max"], 8) / 8) * 8)
    return max(8, min(longest, MAX_LENGTH_CAP, model_limit))


def model_max_length(tokenizer: Any, model_config: Any) -> int:
    """The position limit of the model (falls back to 512)."""
    limits = [getattr(model_config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 100_000]
    return min(limits) if limits else 512


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> Sequence[np.ndarray]:
    """Token ids per text (int32 arrays: a quarter of what a list of Python ints takes), truncated
    to `max_length`, unpadded. Mapped texts (`data.mapped`) get their ids in a mapped file too."""
    if hasattr(texts, "fingerprint"):
        return tokenize_mapped(tokenizer, texts, max_length)
    if not texts:
        return []
    return [np.asarray(ids, dtype=np.int32) for ids in token_ids(tokenizer, texts, truncation=True, max_length=max_length)]


# ---- token ids ------------------------------------------------------------------------------------

def tokenize_mapped(tokenizer: Any, texts: MappedTexts, max_length: int) -> Any:
    """Token ids of `texts` (truncated to `max_length`, special tokens added) in a mapped Arrow file,
    as a `corpus.TokenCache` (a sequence of int32 rows); built once per tokenizer, rows and limit."""
    from datasets import Features
    from datasets import Sequence as Seq
    from datasets import Value
    from datasets.arrow_writer import ArrowWriter

    key = hashlib.sha256(f"{texts.fingerprint()}|{tokenizer_fingerprint(tokenizer)}|{max_length}".encode()).hexdigest()[:20]
    path = bundled.cache_dir() / "tokenized" / f"labelled-{key}.arrow"
    if path.is_file():
        try:
            cache = TokenCache(path)
            if cache.num_rows == len(texts):
                return cache
        except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt
            logger.warning("ignoring a damaged token cache %s (%s); rebuilding it", path, e)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    writer = ArrowWriter(path=str(tmp), features=Features({"input_ids": Seq(Value("int32"))}))
    try:
        for s in range(0, len(texts), CHUNK_ROWS):
            writer.write_batch({"input_ids": list(token_ids(tokenizer, texts[s:s + CHUNK_ROWS], truncation=True,
                                                       max_length=max_length))})
        writer.finalize()
    finally:
        writer.close()
    fs.replace(tmp, path)
    return TokenCache(path)
