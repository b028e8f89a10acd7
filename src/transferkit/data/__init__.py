"""Data: bundled datasets, the format readers (CSV/TSV, JSONL, Parquet, HF dataset folders), the mapped
cache for data larger than memory, deduplication, splitting, tokenization and content fingerprints of the
data a config names. What a task makes of the columns (labels, tags, splits) is the task's (`tasks/`).

Importing this package registers the bundled datasets in `transferkit.core.registry.DATASETS`.
pandas, scikit-learn and datasets are imported only when data is actually read.
"""
from .bundled import BundledDataset, bundled_names, cache_dir, list_datasets
from .fingerprint import check_fingerprints, data_fingerprints
from .tables import ColumnTable, hf_split_names, open_table, read_texts
from .split import DedupeReport, dedupe, split_sizes, stratified_split

__all__ = [
    "BundledDataset", "bundled_names", "cache_dir", "list_datasets",
    "check_fingerprints", "data_fingerprints",
    "ColumnTable", "hf_split_names", "open_table", "read_texts",
    "DedupeReport", "dedupe", "split_sizes", "stratified_split",
]
