"""Data: bundled datasets, file loading, deduplication, splitting and split preparation.

Importing this package registers the bundled datasets in `transferkit.registry.DATASETS`.
pandas, scikit-learn and datasets are imported only when data is actually read.
"""
from .bundled import BundledDataset, bundled_names, cache_dir, list_datasets
from .load import LabelledData, hf_split_names, load_hf_splits, load_table, read_texts
from .prepare import Splits, prepare_splits
from .split import DedupeReport, dedupe, split_sizes, stratified_split

__all__ = [
    "BundledDataset", "bundled_names", "cache_dir", "list_datasets",
    "LabelledData", "hf_split_names", "load_hf_splits", "load_table", "read_texts",
    "Splits", "prepare_splits",
    "DedupeReport", "dedupe", "split_sizes", "stratified_split",
]
