"""Prediction: one `Predictor` for every task, that the CLI, evaluation, export checks and serving all go through.

    predictor.py     Predictor (one run, any task: the task encodes the inputs and decodes the outputs)
    adapters.py      AdapterPredictor (several runs of one base model on a single encoder, tasks mixed)
    multi_adapter.py the shared encoder those runs go through, each method's rows mixed per batch
    switched.py      runs of one base as named adapters on one copy of it, one active per call (served generation)
    loading.py       a run's method, base and trained model, loaded back from its folder
    onnx_backend.py  an ONNX export folder as a model: manifest, onnxruntime session
    files.py         prediction files (JSONL/CSV), `predict_run` (one run) and `predict_runs` (texts routed to adapters)
    pipelines.py     `transferkit.pipeline(...)` in transformers' pipeline shapes
    generation.py    fill-mask and text generation with language models
"""
from .adapters import AdapterPredictor
from .files import OUTPUT_SUFFIXES, predict_run, predict_runs, split_tags, write_predictions
from .predictor import (Predictor, check_batch_size, check_texts, pooled_features, predict_logits,
                        quantize_int8)

__all__ = ["AdapterPredictor", "OUTPUT_SUFFIXES", "Predictor", "check_batch_size", "check_texts", "pooled_features",
           "predict_logits", "predict_run", "predict_runs", "quantize_int8", "split_tags", "write_predictions"]
