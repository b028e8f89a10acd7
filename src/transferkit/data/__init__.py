"""Data: bundled datasets, file loading, deduplication, splitting, split preparation and
content fingerprints of the data a config names.

Importing this package registers the bundled datasets in `transferkit.core.registry.DATASETS`.
pandas, scikit-learn and datasets are imported only when data is actually read.
"""
from .bundled import BundledDataset, bundled_names, cache_dir, list_datasets
from .fingerprint import check_fingerprints, data_fingerprints
from .load import LabelledData, hf_split_names, load_hf_splits, load_table, read_texts
from .prepare import Splits, prepare_splits
from .split import DedupeReport, dedupe, split_sizes, stratified_split

__all__ = [
    "BundledDataset", "bundled_names", "cache_dir", "list_datasets",
    "check_fingerprints", "data_fingerprints",
    "LabelledData", "hf_split_names", "load_hf_splits", "load_table", "read_texts",
    "Splits", "prepare_splits",
    "DedupeReport", "dedupe", "split_sizes", "stratified_split",
]
