"""Prediction: one `Predictor` that the CLI, evaluation, export checks and serving all go through.

    predictor.py     Predictor (one run: labels with confidence) and the batched forward passes
    entities.py      EntityPredictor (NER runs: entities with character offsets)
    adapters.py      AdapterPredictor (several runs of one base model on a single encoder)
    onnx_backend.py  an ONNX export folder as a model: manifest, onnxruntime session, the task's predictor
    files.py         prediction files (JSONL/CSV) and `predict_runs` (texts routed to adapters)
"""
from .adapters import AdapterPredictor
from .files import OUTPUT_SUFFIXES, predict_runs, split_tags, write_predictions
from .predictor import (LoadedModel, Predictor, check_batch_size, check_texts, pooled_features, predict_logits,
                        quantize_int8)

__all__ = ["AdapterPredictor", "LoadedModel", "OUTPUT_SUFFIXES", "Predictor", "check_batch_size", "check_texts", "pooled_features",
           "predict_logits", "predict_runs", "quantize_int8", "split_tags", "write_predictions"]
