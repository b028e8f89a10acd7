"""Smoothing before int8: the same function in fp32, and a smaller int8 error where an input channel
carries outliers (what transformer encoders have and per-tensor activation scales handle badly)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers import make_sentences
from transferkit.data.batches import TokenData
from transferkit.exporting import int8_smoothing
from transferkit.inference.loading import merged_model
from transferkit.exporting.onnx_export import quantize_int8
from transferkit.inference.onnx_graph import write_graph
from transferkit.inference.onnx_backend import OnnxModule, session
from transferkit.modeling.resolve import load_tokenizer
from transferkit.core.runs import RunInfo


def _model_and_data(run: Path, outliers: bool) -> tuple[nn.Module, TokenData]:
    info = RunInfo.read(run)
    model = merged_model(info, None).eval()
    if outliers:  # channel 3 of every LayerNorm output 40x larger: the next layer sees an outlier channel
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight[3] *= 40
                    m.bias[3] *= 40
    tok = load_tokenizer(str(info.artifact_dir))
    texts = [t for t, _ in make_sentences(64, seed=5)]
    return model, TokenData([tok(t)["input_ids"] for t in texts])


def _logits(model: nn.Module, data: TokenData) -> torch.Tensor:
    batch = data.collate(list(range(len(data))), 0)
    with torch.inference_mode():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_smoothing_keeps_the_fp32_function(finished_run):
    model, data = _model_and_data(finished_run("full"), outliers=True)
    before = _logits(model, data)
    n = int8_smoothing.smooth(model, data, pad_id=0)
    assert n == 13  # 2 layers x (query, key, value, attention output, intermediate, output) + the head
    assert sum(isinstance(m, int8_smoothing.SmoothedLinear) for m in model.modules()) == 13
    assert (_logits(model, data) - before).abs().max() < 1e-4 * before.abs().max()


def test_smoothing_lowers_the_int8_error_of_outlier_channels(finished_run, tmp_path):
    model, data = _model_and_data(finished_run("full"), outliers=True)
    batch = data.collate([0, 1], 0)
    example = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    write_graph(model, tmp_path / "fp32.onnx", example, per_token=False)
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "plain.int8.onnx")
    int8_smoothing.smooth(model, data, pad_id=0)
    write_graph(model, tmp_path / "smoothed.onnx", example, per_token=False)
    quantize_int8(tmp_path / "smoothed.onnx", tmp_path / "smoothed.int8.onnx")
    ref = _logits(OnnxModule(session(tmp_path / "fp32.onnx"), ["a", "b"], "sequence"), data).numpy()
    err = {name: np.abs(_logits(OnnxModule(session(tmp_path / f"{name}.int8.onnx"), ["a", "b"], "sequence"),
                                data).numpy() - ref).max() for name in ("plain", "smoothed")}
    assert err["smoothed"] < 0.5 * err["plain"], err
